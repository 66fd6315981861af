// The chat page: one WebSocket to this node's chat endpoint, speaking the
// seed's JSON messages (loginmsg, chatmsg) and switchboard's own (whoamimsg,
// joinmsg, leavemsg, roommsg, membersmsg, presencemsg). Every text from the
// network is shown with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { ws: null, me: "", rooms: [], current: "" };

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function log(kind, parts) {
  const li = document.createElement("li");
  li.className = kind;
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    if (cls) span.className = cls;
    span.textContent = text;
    li.append(span);
  }
  $("log").append(li);
  li.scrollIntoView({ block: "end" });
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(message));
  }
}

function chatUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function connect(name, token) {
  const ws = new WebSocket(chatUrl());
  state.ws = ws;
  setStatus("connecting", "offline");
  ws.onopen = () => {
    send({ MessageType: "loginmsg", Sender: name, Data: token });
    // Answered once the login is decided: the name the node gave us, or "".
    send({ MessageType: "whoamimsg" });
  };
  ws.onmessage = (event) => receive(event.data);
  ws.onclose = (event) => {
    setStatus(`offline (${event.code}${event.reason ? ": " + event.reason : ""})`, "error");
    $("login").hidden = false;
    $("chat").hidden = true;
    state.ws = null;
  };
}

function receive(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return log("error", [["", `unreadable message: ${text}`]]);
  }
  if (typeof message === "string") {
    // The seed's reply to a taken name: "User already exists".
    return log("error", [["", message]]);
  }
  const handler = handlers[message.MessageType];
  if (handler) handler(message);
  else log("notice", [["", text]]);
}

const handlers = {
  whoamimsg(m) {
    if (!m.Data) {
      setStatus("not logged in", "error");
      return;
    }
    state.me = m.Data;
    $("me").textContent = m.Data;
    $("login").hidden = true;
    $("chat").hidden = false;
    setStatus("online", "online");
  },
  chatmsg(m) {
    log("chat", [["from", m.Sender], ["where", ` to ${m.Reciever}: `], ["", m.Data]]);
  },
  roommsg(m) {
    log("room", [["where", `#${m.Reciever} `], ["from", m.Sender], ["", `: ${m.Data}`]]);
  },
  joinmsg(m) {
    if (m.Sender === state.me && !state.rooms.includes(m.Reciever)) {
      state.rooms.push(m.Reciever);
      renderRooms();
      selectRoom(m.Reciever);
    }
    log("notice", [["", `${m.Sender} joined #${m.Reciever}`]]);
    if (m.Reciever === state.current) askMembers();
  },
  leavemsg(m) {
    if (m.Sender === state.me) {
      state.rooms = state.rooms.filter((r) => r !== m.Reciever);
      renderRooms();
      if (state.current === m.Reciever) selectRoom(state.rooms[0] || "");
    }
    log("notice", [["", `${m.Sender} left #${m.Reciever}`]]);
    if (m.Reciever === state.current) askMembers();
  },
  membersmsg(m) {
    if (m.Reciever !== state.current) return;
    const names = m.Data ? m.Data.split(",") : [];
    const list = $("members");
    list.replaceChildren(...names.map((n) => Object.assign(document.createElement("li"), { textContent: n })));
    $("members-count").textContent = `(${m.Count ?? names.length})`;
  },
  presencemsg(m) {
    const asked = m.Reciever ? m.Reciever.split(",") : [];
    const online = new Set(m.Data ? m.Data.split(",") : []);
    $("presence-answer").textContent = asked
      .map((n) => `${n}: ${online.has(n) ? "online" : "offline"}`)
      .join(", ");
  },
  errormsg(m) {
    log("error", [["", m.Data]]);
  },
};

function renderRooms() {
  const list = $("rooms");
  list.replaceChildren(
    ...state.rooms.map((room) => {
      const li = document.createElement("li");
      li.textContent = `#${room}`;
      li.setAttribute("aria-selected", String(room === state.current));
      li.onclick = () => selectRoom(room);
      return li;
    }),
  );
  const target = $("target");
  target.replaceChildren(
    Object.assign(document.createElement("option"), { value: "", textContent: "a person:" }),
    ...state.rooms.map((room) => Object.assign(document.createElement("option"), { value: room, textContent: `#${room}` })),
  );
  target.value = state.current;
}

function selectRoom(room) {
  state.current = room;
  $("members-room").textContent = room ? `#${room}` : "no room";
  $("members").replaceChildren();
  $("members-count").textContent = "";
  renderRooms();
  $("to").hidden = Boolean(room);
  if (room) askMembers();
}

function askMembers() {
  send({ MessageType: "membersmsg", Reciever: state.current });
}

$("login-form").onsubmit = (event) => {
  event.preventDefault();
  connect($("name").value.trim(), $("token").value.trim());
};

$("join-form").onsubmit = (event) => {
  event.preventDefault();
  const room = $("room").value.trim();
  if (room) send({ MessageType: "joinmsg", Reciever: room });
  $("room").value = "";
};

$("presence-form").onsubmit = (event) => {
  event.preventDefault();
  send({ MessageType: "presencemsg", Reciever: $("presence-names").value.replace(/\s+/g, "") });
};

$("target").onchange = () => selectRoom($("target").value);

$("send-form").onsubmit = (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text) return;
  if (state.current) {
    send({ MessageType: "roommsg", Data: text, Reciever: state.current });
  } else {
    const to = $("to").value.trim();
    if (!to) return;
    send({ MessageType: "chatmsg", Data: text, Reciever: to });
    // The sender gets no copy of a one-to-one message (unless it wrote to
    // itself): show it here.
    if (to !== state.me) log("chat mine", [["from", state.me], ["where", ` to ${to}: `], ["", text]]);
  }
  $("text").value = "";
};
