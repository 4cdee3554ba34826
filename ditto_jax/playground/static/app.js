// Ditto playground: chat with a character, or compare two served models blind.
//
// No framework and no build step. The page talks to the OpenAI API of the same
// server (/v1/chat/completions, stream: true) and to /ui/api/* for characters
// and votes. Every piece of user or model text is put on the page with
// textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  votesKept: false,
  mode: "chat",
  character: null,   // the picked character (its system message may since be edited)
  turns: [],         // {user, answers: [{model, text, error, stopped, chunks, view}], voted}
  conversation: "",  // random id of this chat, sent with its votes
  inFlight: [],      // AbortControllers of running requests
};

// ---- small helpers -----------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (response.status === 401) { window.location.assign("/login"); throw new Error("sign in first"); }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (e) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function shuffled(items) {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

// ---- setup ---------------------------------------------------------------------------

async function init() {
  let config;
  try {
    config = await getJSON("/ui/api/config");
  } catch (e) {
    setStatus(`Cannot reach the server: ${e.message}`, true);
    return;
  }
  state.models = config.models;
  state.votesKept = config.votes;
  for (const id of ["model", "model-a", "model-b"]) {
    const select = $(id);
    for (const name of config.models) select.append(new Option(name, name));
  }
  if (config.models.length > 1) $("model-b").value = config.models[1];
  else $("mode-compare").disabled = true;
  for (const lang of config.languages) $("character-lang").append(new Option(lang, lang));

  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", onModeChange);
  for (const id of ["model", "model-a", "model-b"]) $(id).addEventListener("change", () => newChat());
  $("character-search").addEventListener("input", debounce(searchCharacters, 150));
  $("character-lang").addEventListener("change", searchCharacters);
  $("system").addEventListener("input", showCharacter);
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
  });
  $("stop").addEventListener("click", stop);
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", () => newChat());
  $("vote-left").addEventListener("click", () => vote("a"));
  $("vote-right").addEventListener("click", () => vote("b"));
  $("vote-tie").addEventListener("click", () => vote("tie"));
  searchCharacters();
  newChat();
  setStatus(`${config.models.length} model(s), ${config.characters} character rows.`);
}

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function onModeChange() {
  state.mode = $("mode-compare").checked ? "compare" : "chat";
  document.body.classList.toggle("compare", state.mode === "compare");
  newChat();
}

// ---- characters --------------------------------------------------------------------

let searchSerial = 0;

async function searchCharacters() {
  const serial = ++searchSerial;
  const params = new URLSearchParams({ q: $("character-search").value, lang: $("character-lang").value, limit: "20" });
  let found;
  try {
    found = (await getJSON(`/ui/api/characters?${params}`)).data;
  } catch (e) {
    setStatus(`Character search failed: ${e.message}`, true);
    return;
  }
  if (serial !== searchSerial) return;  // a newer search is on its way
  const list = $("character-results");
  list.replaceChildren();
  for (const character of found) {
    const item = el("li");
    item.tabIndex = 0;
    item.dataset.characterId = character.character_id;
    item.append(el("span", "label", character.label), el("span", "lang", character.lang));
    if (character.description) item.append(el("span", "description", character.description));
    const pick = () => pickCharacter(character);
    item.addEventListener("click", pick);
    item.addEventListener("keydown", (event) => { if (event.key === "Enter") pick(); });
    list.append(item);
  }
}

function pickCharacter(character) {
  state.character = character;
  $("system").value = character.system;
  showCharacter();
  newChat();
}

// The picked character counts only while its system message is unchanged.
function currentCharacter() {
  const c = state.character;
  return c && $("system").value === c.system ? c : null;
}

function showCharacter() {
  const c = currentCharacter();
  $("character-current").textContent = c
    ? `${c.label} (${c.lang}, ${c.character_id})`
    : "No character: custom system message.";
}

// ---- conversation ------------------------------------------------------------------

// Not crypto.randomUUID: that needs a secure context, and the page may be served over plain http.
function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function newChat() {
  stop();
  state.turns = [];
  state.conversation = randomId();
  $("transcript").replaceChildren();
  $("vote-bar").hidden = true;
  refreshButtons();
}

function busy() { return state.inFlight.length > 0; }

function refreshButtons() {
  const last = state.turns[state.turns.length - 1];
  $("send").disabled = busy();
  $("stop").disabled = !busy();
  $("regenerate").disabled = busy() || !last;
  const canVote = state.mode === "compare" && last && !busy() && !last.voted
    && last.answers.length === 2 && last.answers.every((a) => !a.error);
  $("vote-bar").hidden = !canVote;
}

// The conversation as `model` saw it: its own answers to the earlier turns.
function history(model, uptoTurn) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const turn of state.turns.slice(0, uptoTurn)) {
    messages.push({ role: "user", content: turn.user });
    const answer = turn.answers.find((a) => a.model === model) || turn.answers[0];
    messages.push({ role: "assistant", content: answer.text });
  }
  return messages;
}

// The model(s) a turn goes to, in the order shown; null (with a note) when compare has no two models.
function pickModels() {
  if (state.mode !== "compare") return [$("model").value];
  const pair = [$("model-a").value, $("model-b").value];
  if (pair[0] === pair[1]) {
    setStatus("Pick two different models to compare.", true);
    return null;
  }
  return shuffled(pair);
}

function send() {
  const text = $("prompt").value;
  if (busy() || !text.trim()) return;
  const models = pickModels();
  if (!models) return;
  $("prompt").value = "";
  const turn = { user: text, answers: [], voted: false, node: el("div", "turn") };
  turn.node.append(messageNode("user", "You", text).node);
  $("transcript").append(turn.node);
  state.turns.push(turn);
  answer(turn, models);
}

function regenerate() {
  if (busy() || !state.turns.length) return;
  const models = pickModels();
  if (models) answer(state.turns[state.turns.length - 1], models);
}

// Asks the model(s) for this turn's answer(s): one in chat mode, two in random order in compare mode.
function answer(turn, models) {
  const index = state.turns.indexOf(turn);
  if (turn.answersNode) turn.answersNode.remove();
  turn.voted = false;
  turn.answersNode = el("div", state.mode === "compare" ? "answers" : "single");
  turn.node.append(turn.answersNode);
  turn.answers = models.map((model, side) => {
    const who = state.mode === "compare" ? (side === 0 ? "Left" : "Right") : model;
    const view = messageNode("assistant", who, "");
    view.node.dataset.side = state.mode === "compare" ? (side === 0 ? "left" : "right") : "single";
    turn.answersNode.append(view.node);
    return { model, text: "", error: null, stopped: false, chunks: 0, view };
  });
  setStatus("Generating…");
  const runs = turn.answers.map((a) => streamAnswer(a, history(a.model, index).concat({ role: "user", content: turn.user })));
  refreshButtons();
  Promise.all(runs).then(() => {
    refreshButtons();
    const failed = turn.answers.find((a) => a.error);
    if (failed) setStatus(`Generation failed: ${failed.error}`, true);
    else setStatus(state.mode === "compare" ? "Vote for the better answer; the names show after the vote." : "Done.");
    $("transcript").scrollTop = $("transcript").scrollHeight;
  });
}

function messageNode(role, who, text) {
  const node = el("div", `message ${role}`);
  const whoNode = el("span", "who", who);
  const textNode = el("span", "text", text);
  node.append(whoNode, textNode);
  return { node, whoNode, textNode };
}

async function streamAnswer(answer, messages) {
  const controller = new AbortController();
  state.inFlight.push(controller);
  const view = answer.view;
  view.node.classList.add("streaming");
  const body = {
    model: answer.model, messages, stream: true,
    temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
  };
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", credentials: "same-origin", signal: controller.signal,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    await readEvents(response.body, (event) => {
      if (event.error) throw new Error(event.error.message || "server error");
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && typeof delta.content === "string" && delta.content) {
        answer.text += delta.content;
        answer.chunks += 1;
        view.textNode.textContent = answer.text;
        view.node.dataset.chunks = String(answer.chunks);
      }
    });
  } catch (e) {
    if (e.name === "AbortError") {
      answer.stopped = true;
      view.node.dataset.stopped = "true";
    } else {
      answer.error = e.message;
      view.node.classList.add("error");
      view.textNode.textContent = answer.text ? `${answer.text}\n[error: ${e.message}]` : `[error: ${e.message}]`;
    }
  } finally {
    view.node.classList.remove("streaming");
    view.node.dataset.done = "true";
    state.inFlight = state.inFlight.filter((c) => c !== controller);
  }
}

// Server-sent events: `data: {json}` blocks separated by a blank line, ending with `data: [DONE]`.
async function readEvents(stream, onEvent) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = done ? "" : blocks.pop();
    for (const block of blocks) {
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      onEvent(JSON.parse(data));
    }
    if (done) return;
  }
}

function stop() {
  for (const controller of state.inFlight) controller.abort();
}

// ---- votes -------------------------------------------------------------------------

async function vote(choice) {
  const index = state.turns.length - 1;
  const turn = state.turns[index];
  if (!turn || turn.voted || turn.answers.length !== 2) return;
  const character = currentCharacter();
  const [left, right] = turn.answers;
  const record = {
    character: character ? character.label : null,
    character_id: character ? character.character_id : null,
    language: character ? character.lang : null,
    conversation: state.conversation, turn: index + 1, model_a: left.model, model_b: right.model, choice,
  };
  turn.voted = true;
  refreshButtons();
  if (state.votesKept) {
    const response = await fetch("/ui/api/votes", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(record),
    });
    if (!response.ok) {
      turn.voted = false;
      refreshButtons();
      setStatus(`The vote was not saved: ${await errorMessage(response)}`, true);
      return;
    }
    setStatus("Vote saved.");
  } else {
    setStatus("Votes are not kept by this server (start it with --votes FILE).");
  }
  // Reveal the names only now.
  left.view.whoNode.textContent = `Left: ${left.model}`;
  right.view.whoNode.textContent = `Right: ${right.model}`;
  if (choice === "a") left.view.node.classList.add("chosen");
  if (choice === "b") right.view.node.classList.add("chosen");
  turn.answersNode.dataset.revealed = "true";
}

document.addEventListener("DOMContentLoaded", init);
