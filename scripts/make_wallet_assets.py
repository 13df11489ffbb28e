"""Draw the bundled wallet pass images (icon and logo at 1x, 2x and 3x) with Pillow.

    .venv/bin/python scripts/make_wallet_assets.py

The PNGs are committed in wallet/assets; a deployment points COALITION_WALLET_ASSETS_DIR at
its own brand images instead. Sizes follow Apple's guidance: icon 29 pt, logo up to 160x50 pt.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ASSETS = Path(__file__).resolve().parent.parent / "wallet" / "assets"
NAVY = (31, 58, 95, 255)
GOLD = (242, 181, 68, 255)
WHITE = (255, 255, 255, 255)


def emblem(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], ring: str) -> None:
    """Two interlocking rings: points earned at one brand, spent at another."""
    x0, y0, x1, y1 = box
    size = min(x1 - x0, y1 - y0)
    width = max(1, round(size / 9))
    r = size * 0.32
    cy = (y0 + y1) / 2
    for cx, color in ((x0 + size * 0.36, GOLD), (x0 + size * 0.64, WHITE if ring == "w" else NAVY)):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=color, width=width)


def main() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    for scale, suffix in ((1, ""), (2, "@2x"), (3, "@3x")):
        side = 29 * scale
        icon = Image.new("RGBA", (side, side), NAVY)
        emblem(ImageDraw.Draw(icon), (0, 0, side, side), "w")
        icon.save(ASSETS / f"icon{suffix}.png", optimize=True)
        w, h = 160 * scale, 50 * scale
        logo = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(logo)
        emblem(draw, (0, 0, h, h), "w")
        bar = max(1, round(h / 10))
        for i, length in enumerate((0.55, 0.4)):  # a wordmark's weight without a font
            top = h * (0.3 + i * 0.28)
            draw.rounded_rectangle(
                (h * 1.1, top, h * 1.1 + (w - h * 1.2) * length, top + bar * 1.6),
                radius=bar,
                fill=WHITE,
            )
        logo.save(ASSETS / f"logo{suffix}.png", optimize=True)


if __name__ == "__main__":
    main()
