"use strict";
// The page's camera mode: frames go to /v1/stream a few times a second; each person's
// track and steady age come back and are drawn over the live picture. Nothing is stored.

(() => {
  const startButton = document.getElementById("camera-start");
  const stopButton = document.getElementById("camera-stop");
  const section = document.getElementById("camera");
  const video = document.getElementById("camera-video");
  const overlay = document.getElementById("camera-overlay");
  const people = document.getElementById("camera-people");
  const errorLine = document.getElementById("error");
  const SVG = "http://www.w3.org/2000/svg";
  const FRAME_EVERY_MS = 350;
  let stream = null;
  let timer = null;
  let busy = false;
  let session = "";
  let skipped = 0;  // frames not sent, or dropped by the server, to keep up
  const skippedLine = document.getElementById("camera-skipped");

  function showSkipped() {
    skippedLine.hidden = skipped === 0;
    skippedLine.textContent = `${skipped} frame${skipped === 1 ? "" : "s"} skipped to keep up`;
  }

  function say(message) {
    errorLine.textContent = message;
    errorLine.hidden = false;
  }

  function newSession() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function start() {
    errorLine.hidden = true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      say("This browser offers no camera to this page (a camera needs https or localhost).");
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (failure) {
      const refused = failure.name === "NotAllowedError" || failure.name === "SecurityError";
      say(refused
        ? "The camera was refused: allow it in the browser to use this mode."
        : "No camera was found.");
      return;
    }
    session = newSession();
    skipped = 0;
    showSkipped();
    video.srcObject = stream;
    section.hidden = false;
    // Into view: the person sees themselves, and a browser pauses a muted video that is
    // off screen, which would send the same stale frame again and again.
    section.scrollIntoView({ block: "start" });
    startButton.hidden = true;
    stopButton.hidden = false;
    timer = setInterval(sendFrame, FRAME_EVERY_MS);
  }

  function stop() {
    clearInterval(timer);
    timer = null;
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
    startButton.hidden = false;
    stopButton.hidden = true;
  }

  async function sendFrame() {
    if (!video.videoWidth) return;
    if (busy) {  // one frame in flight at a time: the newest is sent, late ones are not
      skipped += 1;
      showSkipped();
      return;
    }
    busy = true;
    try {
      const canvas = document.createElement("canvas");
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.85));
      const params = new URLSearchParams({ session });
      const over = document.getElementById("over").value;
      if (over) params.set("over", over);
      const buffer = document.getElementById("buffer").value;
      if (buffer !== "") params.set("buffer", buffer);
      const headers = { "Content-Type": "image/jpeg" };
      const key = document.getElementById("api-key").value;
      if (key) headers["X-API-Key"] = key;
      const response = await fetch(`/v1/stream?${params}`, { method: "POST", body: blob, headers });
      const answer = await response.json();
      if (!response.ok) {
        say(`The server refused a frame: ${answer.error || response.statusText}`);
        return;
      }
      if (answer.late) {
        skipped += 1;
        showSkipped();
      } else if (timer) {
        draw(answer);
      }
    } catch (failure) {
      say(`The server could not be reached (${failure.message}).`);
    } finally {
      busy = false;
    }
  }

  function label(face) {
    if (face.age == null) return `#${face.track}`;
    const [low, high] = face.interval;
    return `#${face.track} ${Math.round(face.age)} (${Math.round(low)}-${Math.round(high)})`;
  }

  function draw(answer) {
    overlay.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
    overlay.replaceChildren();
    const size = Math.max(14, answer.height / 24);
    people.replaceChildren();
    answer.faces.forEach((face) => {
      const [x1, y1, x2, y2] = face.box;
      const box = document.createElementNS(SVG, "rect");
      Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1, "stroke-width": size / 6 })
        .forEach(([name, value]) => box.setAttribute(name, value));
      box.setAttribute("class", "face-box");
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", x1);
      text.setAttribute("y", Math.max(size, y1 - size / 3));
      text.setAttribute("font-size", size);
      text.setAttribute("class", "face-label");
      text.textContent = label(face);
      overlay.append(box, text);
      const item = document.createElement("li");
      item.className = "camera-person";
      const check = face.decision ? ` · ${face.decision === "pass" ? "pass" : "refer to ID check"}` : "";
      item.textContent = `Person ${label(face)}${check}`;
      people.append(item);
    });
  }

  startButton.addEventListener("click", start);
  stopButton.addEventListener("click", stop);
})();
