// Compiled by `tsc --noEmit -p tests/client/tsconfig.json` in `make lint`: the declarations of
// client/roomkeeper/ (index.d.ts) describe a use of every public piece, strictly typed. Lines
// marked @ts-expect-error must stay errors (a wrong event payload, a missing option).
import {
  backoffDelay, Client, closeAction, Connection, type Member, msgpack, Outbox, Room, RoomClient, RoomCursor,
  RoomError, shouldReconnect,
} from "../../../client/roomkeeper/index.js";
import { decode, encode } from "../../../client/roomkeeper/msgpack.js";

const client = new Client({ token: async ({ reason }) => (reason === "token_expired" ? "fresh" : "jwt"), encoding: "msgpack" });
const lobby: Room = client.room("lobby", { name: "ann", history: 20 });
const off: () => void = lobby.on("message", (m) => {
  const offset: number = m.offset;
  const who: string = m.from.name;
  void offset, who;
});
off();
lobby.on("presence", (members: Member[]) => members.map((m) => m.conns));
lobby.on("recovery", (r) => (r.recovered ? r.replayed : 0));
lobby.on("status", (s) => s.state === "reconnecting" && s.delayMs);
lobby.addEventListener("error", (e) => console.log((e as CustomEvent<RoomError>).detail.code));
// @ts-expect-error a message's offset is a number
lobby.on("message", (m) => { const s: string = m.offset; void s; });
client.on("ready", ({ conn, user }) => `${conn} ${user.name}`);
client.on("mode", ({ mode }) => mode === "v1");
client.connect();
client.backoff = { baseMs: 1000, capMs: 10000 };
const mode: "v1" | "v2" = client.mode;
void mode;
lobby.publish({ text: "hi" }, { id: "x" }).then(({ offset, duplicate }) => offset + (duplicate ? 1 : 0));
lobby.leave();
client.close();

// @ts-expect-error room is required
new RoomClient({ name: "ann" });
const one = new RoomClient({ room: "r", seenEvery: 10 });
one.on("welcome", (w) => w.epoch);
one.connect().drop();

const conn = new Connection({ url: (t) => `wss://x/api/chat/s/ws${t ? `?token=${t}` : ""}` });
conn.on("frame", (d) => (typeof d === "string" ? d.length : d.byteLength));
conn.on("open", () => conn.ready());

const action: "reconnect" | "refresh" | "stop" = closeAction(4001, { canRefreshToken: true });
void action, shouldReconnect(1006), backoffDelay(3, { baseMs: 100 });
const bytes: Uint8Array = encode({ a: 1 });
void decode(bytes), msgpack.decode(msgpack.encode([1, "x"]));
const cursor = new RoomCursor();
cursor.welcome({ epoch: "E" });
void cursor.since?.offset, new Outbox({ maxQueue: 5 }).size;
