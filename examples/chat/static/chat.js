// The chat page: pick a room, join it over a WebSocket, chat, reconnect.
"use strict";

const RECONNECT_EVERY_MS = 10000; // at most one connection attempt per 10 s

const $ = (id) => document.getElementById(id);
const ui = {
  picker: $("picker"),
  form: $("join-form"),
  name: $("name"),
  room: $("room"),
  newRoom: $("new-room"),
  pickerError: $("picker-error"),
  chat: $("chat"),
  roomLabel: $("room-label"),
  status: $("status"),
  roster: $("roster"),
  rosterCount: $("roster-count"),
  messages: $("messages"),
  sendForm: $("send-form"),
  input: $("input"),
  send: $("send"),
};

const state = {
  name: "",
  room: "",
  ws: null,
  ready: false,
  lastConnect: 0,
  lastSeen: 0, // newest message timestamp shown: backlog replays are skipped
  roster: new Map(), // name -> how many members use it
  reconnectTimer: null,
};

// ------------------------------------------------------------------ picker

ui.name.value = localStorage.getItem("chat-name") || "";
ui.room.value = decodeURIComponent(location.hash.slice(1));

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = ui.name.value.trim();
  const room = ui.room.value.trim();
  if (!name || !room) return;
  if (room.length > 32 && !/^[0-9a-f]{64}$/.test(room)) {
    showPickerError("Room names have at most 32 characters.");
    return;
  }
  enterRoom(name, room);
});

ui.newRoom.addEventListener("click", async () => {
  ui.newRoom.disabled = true;
  try {
    const response = await fetch("/api/room", { method: "POST" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    ui.room.value = (await response.text()).trim();
    if (ui.name.value.trim()) ui.form.requestSubmit();
    else ui.name.focus();
  } catch (error) {
    showPickerError(`Could not create a room: ${error.message}`);
  } finally {
    ui.newRoom.disabled = false;
  }
});

function showPickerError(text) {
  ui.pickerError.textContent = text;
  ui.pickerError.hidden = !text;
}

function enterRoom(name, room) {
  state.name = name;
  state.room = room;
  localStorage.setItem("chat-name", name);
  history.replaceState(null, "", `#${encodeURIComponent(room)}`);
  showPickerError("");
  ui.picker.hidden = true;
  ui.chat.hidden = false;
  ui.roomLabel.hidden = false;
  ui.roomLabel.textContent = room.length > 32 ? `${room.slice(0, 12)}…` : room;
  ui.roomLabel.title = room;
  connect();
}

function leaveRoom(error) {
  clearTimeout(state.reconnectTimer);
  state.room = "";
  if (state.ws) state.ws.close();
  ui.chat.hidden = true;
  ui.roomLabel.hidden = true;
  ui.picker.hidden = false;
  setStatus("idle", "");
  showPickerError(error);
}

// -------------------------------------------------------------- connection

function connect() {
  clearTimeout(state.reconnectTimer);
  state.lastConnect = Date.now();
  state.ready = false;
  state.roster.clear();
  renderRoster();
  setStatus("connecting", "connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const room = encodeURIComponent(state.room);
  const ws = new WebSocket(`${scheme}//${location.host}/api/room/${room}/websocket`);
  state.ws = ws;

  ws.addEventListener("open", () => ws.send(JSON.stringify({ name: state.name })));

  ws.addEventListener("message", (event) => {
    if (ws !== state.ws) return;
    const data = JSON.parse(event.data);
    if (data.error) {
      addNotice(`Error: ${data.error}`, "error");
      if (typeof data.refused === "string") restoreRefused(data.refused);
    } else if (data.joined !== undefined) {
      state.roster.set(data.joined, (state.roster.get(data.joined) || 0) + 1);
      renderRoster();
      if (state.ready) addNotice(`${data.joined} joined`);
    } else if (data.quit !== undefined) {
      const left = (state.roster.get(data.quit) || 1) - 1;
      if (left > 0) state.roster.set(data.quit, left);
      else state.roster.delete(data.quit);
      renderRoster();
      addNotice(`${data.quit} left`);
    } else if (data.ready) {
      state.ready = true;
      setStatus("ready", "connected");
      ui.input.focus();
    } else if (typeof data.timestamp === "number") {
      if (data.timestamp > state.lastSeen) {
        state.lastSeen = data.timestamp;
        addMessage(data);
      }
    }
  });

  ws.addEventListener("close", (event) => {
    if (ws !== state.ws || !state.room) return;
    state.ws = null;
    state.ready = false;
    if (event.code === 1009) {
      leaveRoom(event.reason || "Name too long.");
      return;
    }
    const wait = Math.max(0, state.lastConnect + RECONNECT_EVERY_MS - Date.now());
    setStatus("offline", `disconnected; retrying in ${Math.ceil(wait / 1000)} s`);
    state.reconnectTimer = setTimeout(connect, wait);
  });
}

ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.input.value;
  if (!text.trim() || !state.ws || !state.ready) return;
  state.ws.send(JSON.stringify({ message: text }));
  ui.input.value = "";
});

// The server refused a message (too fast, too long) and sent its text back:
// put it back in the input box, before anything typed since, so nothing is lost.
function restoreRefused(text) {
  const typed = ui.input.value;
  ui.input.value = typed && typed !== text ? `${text} ${typed}` : text;
  ui.input.focus();
}

// ---------------------------------------------------------------- rendering

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function renderRoster() {
  ui.roster.replaceChildren();
  const names = [...state.roster.keys()].sort((a, b) => a.localeCompare(b));
  for (const name of names) {
    const item = document.createElement("li");
    item.textContent = name;
    if (name === state.name) item.classList.add("me");
    ui.roster.append(item);
  }
  ui.rosterCount.textContent = String(names.length);
}

function atBottom() {
  const list = ui.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function append(item) {
  const stick = atBottom();
  ui.messages.append(item);
  if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function addMessage(data) {
  const item = document.createElement("li");
  item.className = "msg";
  if (data.name === state.name) item.classList.add("mine");
  item.dataset.timestamp = String(data.timestamp);
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = data.name;
  const when = document.createElement("time");
  when.className = "when";
  const date = new Date(data.timestamp);
  when.dateTime = date.toISOString();
  when.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.append(who, when);
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = data.message;
  item.append(meta, text);
  append(item);
}

function addNotice(text, kind) {
  const item = document.createElement("li");
  item.className = kind ? `notice ${kind}` : "notice";
  item.textContent = text;
  append(item);
}

if (ui.name.value && ui.room.value) enterRoom(ui.name.value.trim(), ui.room.value.trim());
