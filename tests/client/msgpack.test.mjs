// The client's MessagePack codec against @msgpack/msgpack (pinned in package.json) as the
// oracle: for a few thousand generated values of every kind the protocol uses, each side
// decodes the other's bytes to the same value, and — since both write the shortest form — the
// bytes are identical. Edge values at every width boundary are included by name.
import assert from "node:assert/strict";
import { test } from "node:test";
import { decode as oracleDecode, encode as oracleEncode } from "@msgpack/msgpack";
import { decode, encode, msgpack } from "../../client/roomkeeper/index.js";

/** A small seeded PRNG (mulberry32), so a failure names a reproducible seed. */
function rng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const BOUNDARY_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
  -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53 - 1)];
const STRING_LENGTHS = [0, 1, 31, 32, 255, 256, 65535, 65536];

function value(r, depth = 0) {
  const kind = Math.floor(r() * (depth > 3 ? 7 : 9));
  switch (kind) {
    case 0: return null;
    case 1: return r() < 0.5;
    case 2: return BOUNDARY_INTS[Math.floor(r() * BOUNDARY_INTS.length)];
    case 3: return Math.floor((r() - 0.5) * 2 ** (1 + Math.floor(r() * 53)));
    case 4: return (r() - 0.5) * 10 ** Math.floor(r() * 12);
    case 5: {
      const n = r() < 0.1 ? STRING_LENGTHS[Math.floor(r() * STRING_LENGTHS.length)] : Math.floor(r() * 40);
      const alphabet = Array.from("aZ09 _-é→日本🙂"); // code points: 1 to 4 bytes of UTF-8 each
      let s = "";
      for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)];
      return s;
    }
    case 6: {
      const n = r() < 0.1 ? [0, 255, 256, 65536][Math.floor(r() * 4)] : Math.floor(r() * 20);
      return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
    }
    case 7: return Array.from({ length: r() < 0.05 ? 16 + Math.floor(r() * 20) : Math.floor(r() * 5) }, () => value(r, depth + 1));
    default: {
      const o = {};
      const n = r() < 0.05 ? 16 + Math.floor(r() * 20) : Math.floor(r() * 5);
      for (let i = 0; i < n; i++) o[`k${i}_${Math.floor(r() * 1000)}`] = value(r, depth + 1);
      return o;
    }
  }
}

const hex = (b) => Buffer.from(b).toString("hex");

test("round trips and identical bytes against @msgpack/msgpack for 3,000 generated values", () => {
  const seed = 20261202;
  const r = rng(seed);
  for (let i = 0; i < 3000; i++) {
    const v = value(r);
    const ours = encode(v);
    const theirs = oracleEncode(v);
    // (compared as hex, reported short: a mismatch names the value's index and seed)
    if (hex(ours) !== hex(theirs)) assert.fail(`value ${i} (seed ${seed}): bytes differ from the oracle's: ${hex(ours).slice(0, 80)}… vs ${hex(theirs).slice(0, 80)}…`);
    assert.deepEqual(oracleDecode(ours), v, `value ${i}: the oracle reads what we write`);
    assert.deepEqual(decode(theirs), v, `value ${i}: we read what the oracle writes`);
  }
});

test("every integer width boundary, both ways", () => {
  for (const n of BOUNDARY_INTS) {
    assert.equal(hex(encode(n)), hex(oracleEncode(n)), `int ${n}`);
    assert.equal(decode(oracleEncode(n)), n);
  }
  // Widths the oracle never writes for these values but a server may: still read right.
  assert.equal(decode(Uint8Array.of(0xcf, 0, 0, 0, 0, 0, 0, 0, 5)), 5, "uint64 holding a small value");
  assert.equal(decode(Uint8Array.of(0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe)), -2, "int64");
  assert.equal(decode(Uint8Array.of(0xca, 0x3f, 0xc0, 0, 0)), 1.5, "float32");
});

test("a protocol frame as the server sends it (rmp-serde writes maps with string keys)", () => {
  const frame = { type: "message", room: "lobby", offset: 42, from: { id: "u1", name: "ann" }, body: { text: "hi", n: [1, 2.5, null] }, ts: 1795000000123 };
  assert.deepEqual(decode(oracleEncode(frame)), frame);
  assert.deepEqual(oracleDecode(msgpack.encode(frame)), frame);
});

test("undefined map values are left out, as JSON.stringify does", () => {
  assert.deepEqual(decode(encode({ a: 1, b: undefined })), { a: 1 });
});

test("malformed input is refused with a RangeError, never misread", () => {
  assert.throws(() => decode(Uint8Array.of(0xa5, 0x61)), RangeError, "truncated string");
  assert.throws(() => decode(Uint8Array.of(0xcd, 0x01)), RangeError, "truncated uint16");
  assert.throws(() => decode(Uint8Array.of(0x01, 0x02)), RangeError, "trailing bytes");
  assert.throws(() => decode(oracleEncode(new Date(0))), RangeError, "an extension type (timestamp)");
  assert.throws(() => decode(Uint8Array.of(0xc1)), RangeError, "the never-used byte 0xc1");
  assert.throws(() => decode(new Uint8Array(0)), RangeError, "empty");
});

test("values it cannot write are refused with a TypeError", () => {
  assert.throws(() => encode(() => 1), TypeError);
  assert.throws(() => encode(Symbol("s")), TypeError);
});
