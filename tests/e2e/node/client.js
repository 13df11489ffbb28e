#!/usr/bin/env node
// An independent gRPC client for the Coalition gateway: Node's @grpc/grpc-js with the .proto files
// loaded at run time by @grpc/proto-loader (no generated code shared with the server).
//
//   node client.js TARGET API_KEY
//
// Enrolls a member, looks it up by loyalty number and by phone number, then looks up a loyalty
// number whose check digit is wrong. Prints one JSON object on stdout and exits 0:
//
//   {"enrolled": {...}, "by_loyalty": {...}, "by_phone": {...},
//    "bad_check_digit": {"code": 3, "details": "...", "reason": "INVALID_LOYALTY_NUMBER", ...}}
//
// On any other failure prints the error on stderr and exits 1.
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "..", "proto");
const DEADLINE_MS = 10_000;

function loadMemberService() {
  const definition = protoLoader.loadSync("coalition/v1/members.proto", {
    // google/protobuf/*.proto come from proto-loader's bundled well-known types.
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).coalition.v1.MemberService;
}

// --- google.rpc.Status from grpc-status-details-bin, decoded with a minimal wire-format reader ---

function readVarint(buf, pos) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new Error("truncated varint");
    const byte = buf[pos++];
    value |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [value, pos];
    shift += 7n;
  }
}

// Yields [fieldNumber, wireType, value]: a BigInt for varints, a Buffer for length-delimited.
function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      let value;
      [value, pos] = readVarint(buf, pos);
      yield [field, wire, value];
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      const end = pos + Number(len);
      if (end > buf.length) throw new Error("truncated length-delimited field");
      yield [field, wire, buf.subarray(pos, end)];
      pos = end;
    } else if (wire === 1) {
      yield [field, wire, buf.subarray(pos, pos + 8)];
      pos += 8;
    } else if (wire === 5) {
      yield [field, wire, buf.subarray(pos, pos + 4)];
      pos += 4;
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
  }
}

function decodeErrorInfo(buf) {
  // google.rpc.ErrorInfo {string reason = 1; string domain = 2; map<string, string> metadata = 3;}
  const info = { reason: "", domain: "", metadata: {} };
  for (const [field, , value] of fields(buf)) {
    if (field === 1) info.reason = value.toString("utf8");
    else if (field === 2) info.domain = value.toString("utf8");
    else if (field === 3) {
      let k = "";
      let v = "";
      for (const [f, , x] of fields(value)) {
        if (f === 1) k = x.toString("utf8");
        else if (f === 2) v = x.toString("utf8");
      }
      info.metadata[k] = v;
    }
  }
  return info;
}

function decodeBadRequest(buf) {
  // google.rpc.BadRequest {repeated FieldViolation field_violations = 1;}
  // FieldViolation {string field = 1; string description = 2; string reason = 3;}
  const violations = [];
  for (const [field, , value] of fields(buf)) {
    if (field !== 1) continue;
    const violation = { field: "", description: "", reason: "" };
    for (const [f, , x] of fields(value)) {
      if (f === 1) violation.field = x.toString("utf8");
      else if (f === 2) violation.description = x.toString("utf8");
      else if (f === 3) violation.reason = x.toString("utf8");
    }
    violations.push(violation);
  }
  return { field_violations: violations };
}

const DETAIL_DECODERS = {
  "type.googleapis.com/google.rpc.ErrorInfo": decodeErrorInfo,
  "type.googleapis.com/google.rpc.BadRequest": decodeBadRequest,
};

function decodeStatus(buf) {
  // google.rpc.Status {int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3;}
  const status = { code: 0, message: "", details: [] };
  for (const [field, , value] of fields(buf)) {
    if (field === 1) status.code = Number(BigInt.asIntN(32, value));
    else if (field === 2) status.message = value.toString("utf8");
    else if (field === 3) {
      let typeUrl = "";
      let packed = Buffer.alloc(0);
      for (const [f, , x] of fields(value)) {
        if (f === 1) typeUrl = x.toString("utf8");
        else if (f === 2) packed = x;
      }
      const decode = DETAIL_DECODERS[typeUrl];
      status.details.push(
        decode
          ? { "@type": typeUrl, ...decode(packed) }
          : { "@type": typeUrl, value_base64: packed.toString("base64") },
      );
    }
  }
  return status;
}

function describeError(err) {
  const out = { code: err.code, details: err.details };
  const raw = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  if (raw.length > 0) {
    const status = decodeStatus(Buffer.from(raw[0]));
    const info = status.details.find((d) => d["@type"].endsWith("/google.rpc.ErrorInfo"));
    out.reason = info ? info.reason : null;
    out.domain = info ? info.domain : null;
    out.status = status;
  } else {
    out.reason = null;
    out.domain = null;
    out.status = null;
  }
  return out;
}

// --- the calls ---

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, metadata, { deadline }, (err, response) => {
      if (err) {
        err.rpc = `MemberService/${method}`;
        reject(err);
      } else {
        resolve(response);
      }
    });
  });
}

function randomFictionalPhone() {
  // +1 415 555-0100 .. 555-0199: reserved for fiction, yet valid for libphonenumber.
  return `+1415555${String(100 + crypto.randomInt(100)).padStart(4, "0")}`;
}

function wrongCheckDigit(loyaltyNumber) {
  const last = Number(loyaltyNumber.at(-1));
  return loyaltyNumber.slice(0, -1) + String((last + 1) % 10);
}

async function enroll(client, metadata, runId) {
  // A phone number can be taken when this client runs twice against the same database; only
  // PHONE_NUMBER_TAKEN is retried, with another number and a new request_id.
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await call(
        client,
        "EnrollMember",
        {
          request_id: `node-e2e-${runId}-${attempt}`,
          member: { display_name: "Grace Hopper (node e2e)", phone_number: randomFictionalPhone() },
        },
        metadata,
      );
      return response.member;
    } catch (err) {
      if (attempt >= 5 || describeError(err).reason !== "PHONE_NUMBER_TAKEN") throw err;
    }
  }
}

async function main(argv) {
  if (argv.length !== 2) {
    throw Object.assign(new Error("usage: node client.js TARGET API_KEY"), { usage: true });
  }
  const [target, apiKey] = argv;
  const MemberService = loadMemberService();
  const client = new MemberService(target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${apiKey}`);

  try {
    const enrolled = await enroll(client, metadata, crypto.randomUUID());
    const byLoyalty = await call(
      client,
      "LookupMember",
      { loyalty_number: enrolled.loyalty_number },
      metadata,
    );
    const byPhone = await call(
      client,
      "LookupMember",
      { phone_number: enrolled.phone_number },
      metadata,
    );

    let badCheckDigit;
    try {
      const unexpected = await call(
        client,
        "LookupMember",
        { loyalty_number: wrongCheckDigit(enrolled.loyalty_number) },
        metadata,
      );
      throw new Error(
        `LookupMember with a wrong check digit succeeded: ${JSON.stringify(unexpected)}`,
      );
    } catch (err) {
      if (err.code === undefined) throw err;
      badCheckDigit = describeError(err);
    }

    return {
      enrolled,
      by_loyalty: byLoyalty.member,
      by_phone: byPhone.member,
      bad_check_digit: badCheckDigit,
    };
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  },
  (err) => {
    if (err.usage) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    const summary =
      err.code !== undefined
        ? { rpc: err.rpc, ...describeError(err), message: err.message }
        : { message: err.message, stack: err.stack };
    process.stderr.write(`client.js failed: ${JSON.stringify(summary)}\n`);
    process.exit(1);
  },
);
