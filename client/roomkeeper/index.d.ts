// Types of @roomkeeper/client. The wire protocol is docs/PROTOCOL.md in the Roomkeeper
// repository; every frame type below mirrors a frame there.

export { decode, encode, msgpack, MsgpackValue } from "./msgpack.js";

// ---- frames ----------------------------------------------------------------------------------

export interface Member {
  id: string;
  name: string;
  /** Open connections of this user in the room. */
  conns: number;
  meta?: unknown;
}

export interface MessageFrame {
  type: "message";
  /** Set on v2 sockets. */
  room?: string;
  offset: number;
  from: { id: string; name: string };
  body: unknown;
  ts: number;
  id?: string;
}

/** v1's `welcome`; v2's `subscribed` has the same fields but `protocol`. */
export interface WelcomeFrame {
  type: "welcome" | "subscribed";
  protocol?: number;
  room: string;
  conn: string;
  me: Member;
  members: Member[];
  epoch: string;
  offset: number;
  recovered?: boolean;
  replayed: number;
}

export interface RecoveryReport {
  /** true: exactly what was missed was replayed; false: the view was reloaded from history. */
  recovered: boolean;
  replayed: number;
  epochChanged: boolean;
}

export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";
export type RoomState = "subscribing" | "open" | "reconnecting" | "closed";

export interface StatusEvent<S extends string = ConnectionState> {
  state: S;
  attempt?: number;
  delayMs?: number;
  code?: number;
  reason?: string;
  room?: string;
  conn?: string;
}

export interface ClosedEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
}

export interface Ack {
  offset: number;
  /** true when the server had this id already (a retry): stored once. */
  duplicate: boolean;
}

// ---- errors and policy -----------------------------------------------------------------------

export declare class RoomError extends Error {
  constructor(code: string, message: string, id?: string, room?: string);
  /** The server's error code, or the client's: timeout, queue_full, closed,
   *  token_unavailable, token_expired, client_decode. */
  readonly code: string;
  /** The publish it answers, when it answers one. */
  readonly id?: string;
  /** The room it concerns (v2). */
  readonly room?: string;
}

export declare const CLOSE_TOO_SLOW: 4008;
export declare const CLOSE_TOKEN_EXPIRED: 4001;
export declare const PING: string;
export declare function shouldReconnect(code: number, opts?: { canRefreshToken?: boolean }): boolean;
export declare function closeAction(code: number, opts?: { canRefreshToken?: boolean }): "reconnect" | "refresh" | "stop";
export interface Backoff {
  baseMs?: number;
  capMs?: number;
}
export declare function backoffDelay(attempt: number, opts?: Backoff & { random?: () => number }): number;

// ---- events ----------------------------------------------------------------------------------

/** An EventTarget whose events are CustomEvents; `on` is the short form. */
export declare class Emitter<Events extends Record<string, unknown> = Record<string, unknown>> extends EventTarget {
  /** Calls `fn(detail)` for each `type` event; answers the function that removes it. */
  on<K extends keyof Events & string>(type: K, fn: (detail: Events[K]) => void): () => void;
}

// ---- options ---------------------------------------------------------------------------------

export interface TokenContext {
  attempt: number;
  reason: "connect" | "reconnect" | "token_expired";
}
export type TokenProvider = (ctx: TokenContext) => string | undefined | Promise<string | undefined>;

export interface SocketOptions {
  /** A JWT, or a provider asked before every connect (a fresh token after close 4001). */
  token?: string | TokenProvider;
  /** A provider; wins over `token`. */
  getToken?: TokenProvider;
  /** Default: the page's origin, else http://127.0.0.1:8787. */
  baseUrl?: string;
  encoding?: "json" | "msgpack";
  connectTimeoutMs?: number;
  heartbeatMs?: number;
  pongTimeoutMs?: number;
  backoff?: Backoff;
  /** A WebSocket constructor, for Node or tests. */
  WebSocket?: unknown;
}

export interface JoinOptions {
  /** Display name. */
  name?: string;
  meta?: unknown;
  /** Messages replayed on a first join (not on a recovery). */
  history?: number;
  ackTimeoutMs?: number;
  /** Publishes kept while offline or unacknowledged. */
  maxQueue?: number;
}

export interface PublishOptions {
  /** The idempotency key; default a random UUID. */
  id?: string;
  timeoutMs?: number;
}

export declare const DEFAULTS: Readonly<{
  encoding: "json"; history: number; ackTimeoutMs: number; maxQueue: number; heartbeatMs: number;
  pongTimeoutMs: number; connectTimeoutMs: number; seenEvery: number;
}>;

// ---- Connection ------------------------------------------------------------------------------

export interface ConnectionEvents {
  [type: string]: unknown;
  status: StatusEvent;
  open: { protocol: string };
  frame: string | ArrayBuffer;
  tick: undefined;
  closed: ClosedEvent;
  error: RoomError;
}

/** A WebSocket that reconnects; its owner sends the handshake on `open` and calls `ready()`. */
export declare class Connection extends Emitter<ConnectionEvents> {
  constructor(opts: SocketOptions & { url: (token?: string) => string; protocols?: string[] });
  readonly state: ConnectionState;
  readonly protocol: string;
  readonly canRefreshToken: boolean;
  backoff: Backoff | undefined;
  connect(): this;
  ready(detail?: Record<string, unknown>): void;
  send(data: string | Uint8Array): boolean;
  close(code?: number, reason?: string): void;
  drop(reason?: string): void;
}

// ---- RoomClient (v1) -------------------------------------------------------------------------

export interface RoomEvents {
  [type: string]: unknown;
  status: StatusEvent;
  welcome: WelcomeFrame;
  message: MessageFrame;
  presence: Member[];
  recovery: RecoveryReport;
  error: RoomError;
  closed: ClosedEvent;
}

export interface RoomClientOptions extends SocketOptions, JoinOptions {
  room: string;
  /** Report the processed offset (`seen`) after this many messages; 0: on heartbeats only. */
  seenEvery?: number;
}

/** One room over its own socket (protocol v1). */
export declare class RoomClient extends Emitter<RoomEvents> {
  constructor(opts: RoomClientOptions);
  readonly room: string;
  readonly state: ConnectionState;
  readonly me: Member | null;
  readonly members: Member[];
  readonly epoch: string | null;
  readonly offset: number;
  readonly waiting: number;
  backoff: Backoff | undefined;
  connect(): this;
  publish(body: unknown, opts?: PublishOptions): Promise<Ack>;
  close(): void;
  drop(): void;
}

// ---- Client (v2, one socket for many rooms) --------------------------------------------------

export interface RoomHandleEvents {
  [type: string]: unknown;
  status: StatusEvent<RoomState>;
  subscribed: WelcomeFrame;
  message: MessageFrame;
  presence: Member[];
  recovery: RecoveryReport;
  error: RoomError;
  closed: ClosedEvent;
}

/** One room of a Client. */
export declare class Room extends Emitter<RoomHandleEvents> {
  private constructor();
  readonly name: string;
  readonly state: RoomState;
  readonly me: Member | null;
  readonly members: Member[];
  readonly epoch: string | null;
  readonly offset: number;
  readonly waiting: number;
  publish(body: unknown, opts?: PublishOptions): Promise<Ack>;
  leave(): void;
}

export interface ClientEvents {
  [type: string]: unknown;
  status: StatusEvent;
  ready: { conn: string; user: { id: string; name: string | null } };
  mode: { mode: "v1"; reason: string };
  error: RoomError;
  closed: ClosedEvent;
}

export interface ClientOptions extends SocketOptions, JoinOptions {
  /** "auto" (default): v2, and v1 per room if the server has no /api/ws. */
  protocol?: "auto" | "v2" | "v1";
  /** For the "auto" probe; default globalThis.fetch. */
  fetch?: (url: URL) => Promise<{ status: number }>;
  seenEvery?: number;
}

/** One connection to Roomkeeper for any number of rooms. */
export declare class Client extends Emitter<ClientEvents> {
  constructor(opts?: ClientOptions);
  readonly mode: "v2" | "v1";
  readonly state: ConnectionState;
  readonly conn: string | null;
  readonly user: { id: string; name: string | null } | null;
  readonly rooms: Room[];
  backoff: Backoff | undefined;
  room(name: string, opts?: JoinOptions): Room;
  connect(): this;
  close(): void;
  drop(): void;
}

// ---- bookkeeping (exported for tests and custom transports) ----------------------------------

export declare class RoomCursor {
  epoch: string | null;
  offset: number;
  me: Member | null;
  /** The offset to report with `seen`: the last message's, or the welcome's if later. */
  readonly read: number;
  readonly since: { epoch: string; offset: number } | undefined;
  readonly members: Member[];
  welcome(f: Partial<WelcomeFrame> & { epoch: string }): RecoveryReport | null;
  accept(m: { offset: number }): boolean;
  presence(f: { type: "joined" | "presence" | "left"; member: Member }): Member[];
}

export declare class Outbox {
  constructor(opts?: { maxQueue?: number });
  readonly size: number;
  has(id: string): boolean;
  add(frame: { id: string; [k: string]: unknown }, timeoutMs: number): Promise<Ack>;
  frames(): Array<{ id: string; [k: string]: unknown }>;
  settle(id: string, err: Error | null, ack?: { offset: number; duplicate?: boolean }): boolean;
  transfer(publish: (frame: { id: string; [k: string]: unknown }) => Promise<Ack>): void;
  failAll(err: Error): void;
}

/** Mints a local development token (only where ENVIRONMENT=local). */
export declare function devToken(claims: Record<string, unknown>, baseUrl?: string): Promise<string>;
