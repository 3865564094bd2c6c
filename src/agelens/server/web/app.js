"use strict";
// The AgeLens page: send the photo to /v1/gate, draw the answer over it. Nothing is stored.

const form = document.getElementById("upload-form");
const input = document.getElementById("photo");
const dropZone = document.getElementById("drop-zone");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const result = document.getElementById("result");
const preview = document.getElementById("preview");
const overlay = document.getElementById("overlay");
const SVG = "http://www.w3.org/2000/svg";
let currentFile = null;
let previewUrl = null;

// The table's column names, repeated beside each value where a phone shows rows as cards.
const COLUMNS = ["#", "Age", "90% interval", "Age groups", "Age check", "Apparent gender"];

const VERDICTS = {
  pass: "Everyone passes the age check.",
  refer: "Refer to an ID check: not every face clearly clears the threshold.",
  no_face: "No face found: refer to an ID check.",
};

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = false;
  statusLine.textContent = "";
}

// Each analysis takes a ticket; an answer that arrives after a newer request was sent is
// dropped, so a slow earlier answer never overwrites the later one.
let latestTicket = 0;

async function analyse(file) {
  const ticket = ++latestTicket;
  currentFile = file;
  errorLine.hidden = true;
  statusLine.textContent = "Estimating…";
  const params = new URLSearchParams({
    over: document.getElementById("over").value || "18",
    groups: document.getElementById("groups").value,
  });
  // An empty buffer leaves the model's fitted policy in charge, as the CLI and API do.
  const buffer = document.getElementById("buffer").value;
  if (buffer !== "") params.set("buffer", buffer);
  if (document.getElementById("gender").checked) params.set("gender", "true");
  const body = new FormData();
  body.append("file", file);
  const headers = {};
  const key = document.getElementById("api-key").value;
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(`/v1/gate?${params}`, { method: "POST", body, headers });
  } catch (failure) {
    showError(`The server could not be reached (${failure.message}).`);
    return;
  }
  let answer;
  try {
    answer = await response.json();
    if (ticket !== latestTicket) return;
  } catch {
    showError(`The server answered ${response.status} without a readable message.`);
    return;
  }
  if (!response.ok) {
    showError(`This file could not be used: ${answer.error || response.statusText}`);
    result.hidden = true;
    return;
  }
  render(file, answer);
}

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

// Where each face's label goes: above its box, else below, else just inside its top, else a
// line further out; always inside the photo and never over another label. Returns null for
// a label that finds no room.
function placeLabels(boxes, texts, width, height, fontSize, measure) {
  const h = fontSize * 1.3;
  const placed = [];
  return boxes.map(([x1, y1, , y2], index) => {
    const w = Math.min(measure(texts[index]) + fontSize * 0.6, width);
    const x = Math.min(Math.max(x1, 0), width - w);
    // Near its face or not at all: a label far away would name the wrong face.
    const candidates = [y1 - h, y2, y1, y1 - 2 * h, y2 + h];
    for (const y of candidates) {
      const spot = { x, y, w, h };
      if (y < 0 || y + h > height || placed.some((other) => overlaps(other, spot))) continue;
      placed.push(spot);
      return spot;
    }
    return null;
  });
}

function drawFaces(answer) {
  overlay.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
  overlay.replaceChildren();
  // Sizes in the photo's pixels chosen so that labels read at 14 px as the photo is shown.
  const shown = Math.min(answer.width, result.clientWidth || answer.width);
  const scale = answer.width / shown;
  const fontSize = 14 * scale;
  const stroke = 2 * scale;
  const context = document.createElement("canvas").getContext("2d");
  context.font = `700 ${fontSize}px system-ui, sans-serif`;
  const measure = (text) => context.measureText(text).width;
  const boxes = answer.faces.map((face) => face.box);
  // The full label where there is room for every one; else "#n age"; else the number alone.
  const wordings = [
    (face, n) => `#${n} ${face.label}${face.gender ? ` ${face.gender.label}` : ""}`,
    (face, n) => `#${n} ${face.label.split(" ")[0]}`,
    (face, n) => `#${n}`,
  ];
  let texts = [];
  let spots = [];
  for (const wording of wordings) {
    texts = answer.faces.map((face, index) => wording(face, index + 1));
    spots = placeLabels(boxes, texts, answer.width, answer.height, fontSize, measure);
    if (spots.every((spot) => spot !== null)) break;
  }
  answer.faces.forEach((face, index) => {
    const [x1, y1, x2, y2] = face.box;
    const box = document.createElementNS(SVG, "rect");
    Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1, "stroke-width": stroke })
      .forEach(([name, value]) => box.setAttribute(name, value));
    box.setAttribute("class", "face-box");
    overlay.append(box);
    const spot = spots[index];
    if (!spot) return;  // no room left: the table still lists the face
    const background = document.createElementNS(SVG, "rect");
    Object.entries({ x: spot.x, y: spot.y, width: spot.w, height: spot.h })
      .forEach(([name, value]) => background.setAttribute(name, value));
    background.setAttribute("class", "face-label-bg");
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", spot.x + fontSize * 0.3);
    text.setAttribute("y", spot.y + fontSize);
    text.setAttribute("font-size", fontSize);
    text.setAttribute("class", "face-label");
    text.textContent = texts[index];  // the server's words, as the CLI prints them
    overlay.append(background, text);
  });
}

function render(file, answer) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  result.hidden = false;  // shown first, so that its width is known for the labels
  drawFaces(answer);

  const rows = answer.faces.map((face, index) => {
    const row = document.createElement("tr");
    row.className = "face-row";
    const values = [
      `${index + 1}`,
      face.label.startsWith(`${face.ceiling}+`) ? `${face.ceiling}+` : `${face.age.toFixed(1)}`,
      `${Math.round(face.interval[0])}–${face.ceiling ? `${face.ceiling}+` : Math.round(face.interval[1])}`,
    ];
    const cells = values.map((value, column) => {
      const cell = document.createElement("td");
      cell.textContent = value;
      cell.dataset.label = COLUMNS[column];
      return cell;
    });
    const groups = document.createElement("td");
    groups.dataset.label = COLUMNS[3];
    // The most likely group, as the CLI and the API name it; the age's own group beside
    // it where the two differ.
    const likeliest = document.createElement("div");
    likeliest.className = "group-answer";
    likeliest.textContent = `${face.group.label} ${(face.group.probability * 100).toFixed(0)}%`;
    if (face.group.age_group && face.group.age_group !== face.group.label) {
      likeliest.textContent += `; age in ${face.group.age_group}`;
    }
    groups.append(likeliest);
    Object.entries(face.groups).forEach(([name, probability]) => {
      const line = document.createElement("div");
      line.className = "bar-row";
      const title = document.createElement("span");
      title.textContent = name;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.setAttribute("role", "img");
      bar.setAttribute("aria-label", `${name}: ${(probability * 100).toFixed(0)}%`);
      const fill = document.createElement("span");
      fill.style.width = `${(probability * 100).toFixed(1)}%`;
      bar.append(fill);
      const value = document.createElement("span");
      value.textContent = `${(probability * 100).toFixed(0)}%`;
      line.append(title, bar, value);
      groups.append(line);
    });
    const decision = document.createElement("td");
    decision.className = `decision-${face.decision}`;
    decision.dataset.label = COLUMNS[4];
    decision.textContent = face.decision === "pass" ? "pass" : "refer to ID check";
    // Why it was referred, as the CLI and the API say it (a face too small, too dark...).
    (face.reasons || []).forEach((reason) => {
      const why = document.createElement("div");
      why.className = "reason";
      why.textContent = reason;
      decision.append(why);
    });
    row.append(...cells, groups, decision);
    if (face.gender) {
      const gender = document.createElement("td");
      gender.dataset.label = COLUMNS[5];
      const likelier = Object.entries(face.gender.probabilities)
        .reduce((best, entry) => (entry[1] > best[1] ? entry : best));
      const share = `${likelier[0]} ${(likelier[1] * 100).toFixed(0)}%`;
      // The same words as the CLI's table: "female 93%", or "uncertain (female 58%)".
      gender.textContent = face.gender.label === likelier[0]
        ? share
        : `${face.gender.label} (${share})`;
      row.append(gender);
    }
    return row;
  });
  document.querySelector("#faces tbody").replaceChildren(...rows);
  document.getElementById("gender-column").hidden = !answer.faces.some((face) => face.gender);
  // No face, no table: an empty header row says nothing.
  document.getElementById("faces").hidden = rows.length === 0;
  const verdict = document.getElementById("verdict");
  verdict.className = `decision-${answer.decision}`;
  verdict.textContent = `${VERDICTS[answer.decision]} (A face passes when ${answer.measure} reaches ${answer.pass_age}.)`;
  document.getElementById("caption").textContent =
    `${answer.faces.length} face${answer.faces.length === 1 ? "" : "s"} found.`;
  statusLine.textContent = `Done: ${answer.faces.length} face${answer.faces.length === 1 ? "" : "s"}.`;
  result.hidden = false;
  // On a phone the answer lands below the fold: bring it into view.
  if (result.getBoundingClientRect().top > window.innerHeight * 0.6) {
    result.scrollIntoView({ block: "start" });
  }
}

input.addEventListener("change", () => {
  if (input.files.length) analyse(input.files[0]);
});
form.addEventListener("submit", (event) => event.preventDefault());
["over", "buffer", "groups", "gender"].forEach((id) =>
  document.getElementById(id).addEventListener("change", () => {
    if (currentFile) analyse(currentFile);
  }),
);
["dragenter", "dragover"].forEach((name) =>
  dropZone.addEventListener(name, (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  }),
);
["dragleave", "drop"].forEach((name) =>
  dropZone.addEventListener(name, () => dropZone.classList.remove("dragging")),
);
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) analyse(file);
});
