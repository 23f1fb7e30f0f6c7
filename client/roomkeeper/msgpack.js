// MessagePack for the Roomkeeper client: the subset the protocol uses — nil, booleans,
// integers (to 2^53), float64, strings, binary (Uint8Array), arrays and maps with string keys.
// Each value is written in its shortest form, as the MessagePack spec recommends (and as
// @msgpack/msgpack writes it; tests/client/ checks both directions against it). Extension
// types (timestamps included) are refused on decode; `undefined` map values are left out.

const te = new TextEncoder();
const td = new TextDecoder();

/** The codec: `encode(value) → Uint8Array`, `decode(bytes) → value`. */
export const msgpack = {
  encode(value) {
    const out = [];
    const u8 = (b) => out.push(b & 0xff);
    const be = (n, bytes) => { for (let i = bytes - 1; i >= 0; i--) u8(Number((BigInt(n) >> BigInt(8 * i)) & 0xffn)); };
    const enc = (v) => {
      if (v === null || v === undefined) return u8(0xc0);
      if (v === false) return u8(0xc2);
      if (v === true) return u8(0xc3);
      if (typeof v === "number") {
        if (Number.isInteger(v) && v >= 0 && v < 2 ** 53) {
          if (v < 128) return u8(v);
          if (v < 256) { u8(0xcc); return u8(v); }
          if (v < 65536) { u8(0xcd); return be(v, 2); }
          if (v < 2 ** 32) { u8(0xce); return be(v, 4); }
          u8(0xcf); return be(v, 8);
        }
        if (Number.isInteger(v) && v < 0 && v >= -(2 ** 53)) {
          if (v >= -32) return u8(v);
          if (v >= -128) { u8(0xd0); return u8(v); }
          if (v >= -32768) { u8(0xd1); return be(v & 0xffff, 2); }
          if (v >= -(2 ** 31)) { u8(0xd2); return be(v >>> 0, 4); }
          u8(0xd3); return be(BigInt.asUintN(64, BigInt(v)), 8);
        }
        u8(0xcb);
        const b = new Uint8Array(new Float64Array([v]).buffer).reverse();
        return b.forEach(u8);
      }
      if (typeof v === "string") {
        const b = te.encode(v);
        if (b.length < 32) u8(0xa0 | b.length);
        else if (b.length < 256) { u8(0xd9); u8(b.length); }
        else if (b.length < 65536) { u8(0xda); be(b.length, 2); }
        else { u8(0xdb); be(b.length, 4); }
        return b.forEach(u8);
      }
      if (v instanceof Uint8Array) {
        if (v.length < 256) { u8(0xc4); u8(v.length); }
        else if (v.length < 65536) { u8(0xc5); be(v.length, 2); }
        else { u8(0xc6); be(v.length, 4); }
        return v.forEach(u8);
      }
      if (Array.isArray(v)) {
        if (v.length < 16) u8(0x90 | v.length);
        else if (v.length < 65536) { u8(0xdc); be(v.length, 2); }
        else { u8(0xdd); be(v.length, 4); }
        return v.forEach(enc);
      }
      if (typeof v === "object") {
        const keys = Object.keys(v).filter((k) => v[k] !== undefined);
        if (keys.length < 16) u8(0x80 | keys.length);
        else if (keys.length < 65536) { u8(0xde); be(keys.length, 2); }
        else { u8(0xdf); be(keys.length, 4); }
        return keys.forEach((k) => { enc(k); enc(v[k]); });
      }
      throw new TypeError(`cannot encode ${typeof v} as MessagePack`);
    };
    enc(value);
    return new Uint8Array(out);
  },

  decode(bytes) {
    const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    let p = 0;
    const need = (n) => { if (p + n > b.length) throw new RangeError("truncated MessagePack"); };
    const str = (n) => { need(n); const s = td.decode(b.subarray(p, p + n)); p += n; return s; };
    const bin = (n) => { need(n); const s = b.slice(p, p + n); p += n; return s; };
    const arr = (n) => { const a = []; for (let i = 0; i < n; i++) a.push(dec()); return a; };
    const map = (n) => { const o = {}; for (let i = 0; i < n; i++) { const k = dec(); o[k] = dec(); } return o; };
    const rd = (f, n) => { need(n); const v = dv[f](p); p += n; return v; };
    const u64 = () => { need(8); const v = dv.getBigUint64(p); p += 8; return Number(v); };
    const i64 = () => { need(8); const v = dv.getBigInt64(p); p += 8; return Number(v); };
    const dec = () => {
      need(1);
      const t = b[p++];
      if (t < 0x80) return t;
      if (t < 0x90) return map(t & 0x0f);
      if (t < 0xa0) return arr(t & 0x0f);
      if (t < 0xc0) return str(t & 0x1f);
      if (t >= 0xe0) return t - 256;
      switch (t) {
        case 0xc0: return null;
        case 0xc2: return false;
        case 0xc3: return true;
        case 0xc4: return bin(rd("getUint8", 1));
        case 0xc5: return bin(rd("getUint16", 2));
        case 0xc6: return bin(rd("getUint32", 4));
        case 0xca: return rd("getFloat32", 4);
        case 0xcb: return rd("getFloat64", 8);
        case 0xcc: return rd("getUint8", 1);
        case 0xcd: return rd("getUint16", 2);
        case 0xce: return rd("getUint32", 4);
        case 0xcf: return u64();
        case 0xd0: return rd("getInt8", 1);
        case 0xd1: return rd("getInt16", 2);
        case 0xd2: return rd("getInt32", 4);
        case 0xd3: return i64();
        case 0xd9: return str(rd("getUint8", 1));
        case 0xda: return str(rd("getUint16", 2));
        case 0xdb: return str(rd("getUint32", 4));
        case 0xdc: return arr(rd("getUint16", 2));
        case 0xdd: return arr(rd("getUint32", 4));
        case 0xde: return map(rd("getUint16", 2));
        case 0xdf: return map(rd("getUint32", 4));
        default: throw new RangeError(`unsupported MessagePack type 0x${t.toString(16)}`);
      }
    };
    const v = dec();
    if (p !== b.length) throw new RangeError("trailing bytes after MessagePack value");
    return v;
  },
};

/** `msgpack.encode`, as a function. */
export const encode = (value) => msgpack.encode(value);
/** `msgpack.decode`, as a function. */
export const decode = (bytes) => msgpack.decode(bytes);
