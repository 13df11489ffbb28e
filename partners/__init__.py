"""Partner onboarding: the coalition CA and partner identities."""
