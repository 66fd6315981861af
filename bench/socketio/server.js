// A chat server on Socket.IO with the Redis adapter, with the seed's semantics,
// so that loadgen (`--protocol socketio`) can measure it beside switchboard:
// one event to log in (acknowledged), one to chat; names are unique across the
// cluster (a Redis key per name, SET NX); a chat message goes to the recipient
// on whichever node holds it, through the adapter's pub/sub.
//
//   node bench/socketio/server.js --port 9400 --redis redis://127.0.0.1:6379
//        [--login-event loginmsg] [--chat-event chatmsg]
//
// Prints "socketio listening on PORT" once it accepts connections.
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const port = Number(args.port ?? 9400);
const redisUrl = args.redis ?? "redis://127.0.0.1:6379";
const loginEvent = args["login-event"] ?? "loginmsg";
const chatEvent = args["chat-event"] ?? "chatmsg";
const nodeId = randomBytes(6).toString("hex");

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
const registry = pub.duplicate();
await Promise.all([pub.connect(), sub.connect(), registry.connect()]);

const http = createServer();
const io = new Server(http, { adapter: createAdapter(pub, sub), transports: ["websocket"] });
const nameKey = (name) => `sio:reg:${name}`;
// Deletes a name's key only if this node still holds it.
const RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

io.on("connection", (socket) => {
  let name = null;
  socket.on(loginEvent, async (message, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    const wanted = message && typeof message.Sender === "string" ? message.Sender : "";
    if (name) return reply({ ok: false, error: `already logged in as ${JSON.stringify(name)}` });
    if (!wanted) return reply({ ok: false, error: "login needs a non-empty Sender" });
    const claimed = await registry.set(nameKey(wanted), `${nodeId}:${socket.id}`, { NX: true });
    if (claimed !== "OK") return reply({ ok: false, error: "User already exists" });
    name = wanted;
    socket.join(`u:${name}`);
    reply({ ok: true });
  });
  socket.on(chatEvent, (message, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    if (!name) return reply({ ok: false, error: "log in first" });
    if (!message || typeof message.Reciever !== "string" || !message.Reciever) {
      return reply({ ok: false, error: "chat needs a non-empty Reciever" });
    }
    // The server stamps the sender, as switchboard does.
    const out = { MessageType: "chatmsg", Data: String(message.Data ?? ""), Reciever: message.Reciever, Sender: name };
    io.to(`u:${message.Reciever}`).emit(chatEvent, out);
    reply({ ok: true });
  });
  socket.on("disconnect", () => {
    if (name) registry.eval(RELEASE, { keys: [nameKey(name)], arguments: [`${nodeId}:${socket.id}`] }).catch(() => {});
  });
});

http.listen(port, "127.0.0.1", () => console.log(`socketio listening on ${http.address().port}`));
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    io.close();
    Promise.allSettled([pub.quit(), sub.quit(), registry.quit()]).then(() => process.exit(0));
  });
}
