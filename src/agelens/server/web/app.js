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

async function analyse(file) {
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

function render(file, answer) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  preview.src = previewUrl;
  overlay.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
  overlay.replaceChildren();
  const stroke = Math.max(2, Math.min(answer.width, answer.height) / 200);
  const fontSize = Math.max(12, Math.min(answer.width, answer.height) / 24);
  answer.faces.forEach((face, index) => {
    const [x1, y1, x2, y2] = face.box;
    const label = face.label;  // the server's words, as the CLI prints them: "80+" at the top
    const box = document.createElementNS(SVG, "rect");
    Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1, "stroke-width": stroke })
      .forEach(([name, value]) => box.setAttribute(name, value));
    box.setAttribute("class", "face-box");
    const labelY = y1 - fontSize * 1.3 >= 0 ? y1 - fontSize * 1.3 : y1;
    const background = document.createElementNS(SVG, "rect");
    Object.entries({ x: x1, y: labelY, width: fontSize * 0.62 * (label.length + 3), height: fontSize * 1.3 })
      .forEach(([name, value]) => background.setAttribute(name, value));
    background.setAttribute("class", "face-label-bg");
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", x1 + fontSize * 0.3);
    text.setAttribute("y", labelY + fontSize);
    text.setAttribute("font-size", fontSize);
    text.setAttribute("class", "face-label");
    text.textContent = `#${index + 1} ${label}`;
    overlay.append(box, background, text);
  });

  const rows = answer.faces.map((face, index) => {
    const row = document.createElement("tr");
    row.className = "face-row";
    const cells = [
      `${index + 1}`,
      face.label.startsWith(`${face.ceiling}+`) ? `${face.ceiling}+` : `${face.age.toFixed(1)}`,
      `${Math.round(face.interval[0])}–${face.ceiling ? `${face.ceiling}+` : Math.round(face.interval[1])}`,
    ].map((value) => {
      const cell = document.createElement("td");
      cell.textContent = value;
      return cell;
    });
    const groups = document.createElement("td");
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
    decision.className = `decision-${answer.decisions[index]}`;
    decision.textContent = answer.decisions[index] === "pass" ? "pass" : "refer to ID check";
    row.append(...cells, groups, decision);
    return row;
  });
  document.querySelector("#faces tbody").replaceChildren(...rows);
  // No face, no table: an empty header row says nothing.
  document.getElementById("faces").hidden = rows.length === 0;
  const verdict = document.getElementById("verdict");
  verdict.className = `decision-${answer.decision}`;
  const measure = answer.rule === "lower_bound"
    ? "the lower end of its 90% interval"
    : "its estimated age";
  verdict.textContent = `${VERDICTS[answer.decision]} (A face passes when ${measure} reaches ${answer.pass_age}.)`;
  document.getElementById("caption").textContent =
    `${answer.faces.length} face${answer.faces.length === 1 ? "" : "s"} found.`;
  statusLine.textContent = `Done: ${answer.faces.length} face${answer.faces.length === 1 ? "" : "s"}.`;
  result.hidden = false;
}

input.addEventListener("change", () => {
  if (input.files.length) analyse(input.files[0]);
});
form.addEventListener("submit", (event) => event.preventDefault());
["over", "buffer", "groups"].forEach((id) =>
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
