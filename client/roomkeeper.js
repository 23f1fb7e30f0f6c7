// The Roomkeeper client library at its original address: everything is in ./roomkeeper/
// (the @roomkeeper/client package; see its index.js).
export * from "./roomkeeper/index.js";
