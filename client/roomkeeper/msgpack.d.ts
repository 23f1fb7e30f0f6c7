/** A value MessagePack carries here: nil, booleans, numbers, strings, bytes, arrays, maps. */
export type MsgpackValue =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | MsgpackValue[]
  | { [key: string]: MsgpackValue | undefined };

/** The codec. `decode` throws a RangeError on truncated input, trailing bytes or an extension type. */
export declare const msgpack: {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array | ArrayBuffer): unknown;
};
export declare function encode(value: unknown): Uint8Array;
export declare function decode(bytes: Uint8Array | ArrayBuffer): unknown;
