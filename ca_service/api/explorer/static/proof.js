// Re-verify a certificate's tlog-proof@v1 bundle in the browser, with no help from the server's
// own verdict: the checkpoint's Ed25519 signature (C2SP signed-note) against the log key in the
// form field, then the RFC 9162 section 2.1.3.2 inclusion proof of the leaf to the signed root.
"use strict";
(function () {
  const button = document.getElementById("reverify");
  if (!button) return;
  const out = document.getElementById("browser-result");
  const enc = new TextEncoder();

  function b64(s) {
    const bin = atob(s);
    const u = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u;
  }
  function hex(u) { return Array.from(u, (b) => b.toString(16).padStart(2, "0")).join(""); }
  function concat(...parts) {
    const n = parts.reduce((a, p) => a + p.length, 0);
    const u = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { u.set(p, o); o += p.length; }
    return u;
  }
  async function sha256(u) { return new Uint8Array(await crypto.subtle.digest("SHA-256", u)); }
  function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }

  function parseBundle(text) {
    const cut = text.indexOf("\n\n");
    if (cut < 0) throw new Error("the bundle has no checkpoint");
    const lines = text.slice(0, cut).split("\n");
    if (lines.shift() !== "c2sp.org/tlog-proof@v1") throw new Error("not a tlog-proof@v1 bundle");
    let extra = null;
    if (lines.length && lines[0].startsWith("extra ")) extra = b64(lines.shift().slice(6));
    const m = /^index (0|[1-9][0-9]{0,15})$/.exec(lines.shift() || "");
    if (!m) throw new Error("the bundle has no index line");
    return { extra, index: Number(m[1]), hashes: lines.map(b64), note: text.slice(cut + 2) };
  }

  async function verifyNote(note, vkey) {
    const parts = vkey.trim().split("+");
    if (parts.length < 3) throw new Error("the log key is not <name>+<key id>+<base64>");
    const name = parts[0], keyId = parts[1], blob = b64(parts.slice(2).join("+"));
    if (blob.length !== 33 || blob[0] !== 1) throw new Error("only Ed25519 log keys are supported");
    const cut = note.lastIndexOf("\n\n");
    if (cut < 0) throw new Error("the checkpoint has no signature block");
    const body = note.slice(0, cut + 1);
    const key = await crypto.subtle.importKey("raw", blob.slice(1), { name: "Ed25519" }, false, ["verify"]);
    for (const line of note.slice(cut + 2).split("\n")) {
      const f = line.replace(/^\u2014 /, "").split(" ");
      if (!line.startsWith("\u2014 ") || f.length !== 2 || f[0] !== name) continue;
      const sig = b64(f[1]);
      if (hex(sig.slice(0, 4)) !== keyId) continue;
      if (await crypto.subtle.verify({ name: "Ed25519" }, key, sig.slice(4), enc.encode(body))) {
        const [origin, size, root] = body.split("\n");
        return { origin, size: Number(size), root: b64(root) };
      }
      throw new Error("the checkpoint signature does not verify under this log key");
    }
    throw new Error("the checkpoint carries no signature by this log key");
  }

  // RFC 9162 section 2.1.3.2: recompute the root from the leaf hash and the audit path.
  async function rootFromProof(leafHash, index, size, path) {
    if (index >= size) throw new Error("the index is beyond the tree");
    let fn = index, sn = size - 1, r = leafHash;
    for (const p of path) {
      if (sn === 0) throw new Error("the proof is too long");
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(concat(Uint8Array.of(1), p, r));
        if (fn % 2 === 0) { while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); } }
      } else {
        r = await sha256(concat(Uint8Array.of(1), r, p));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Error("the proof is too short");
    return r;
  }

  button.addEventListener("click", async () => {
    out.textContent = "checking...";
    out.className = "";
    try {
      const vkeyField = document.getElementById("vkey");
      const bundle = parseBundle(await (await fetch(button.dataset.bundleUrl)).text());
      if (!bundle.extra) throw new Error("the bundle carries no leaf");
      const cp = await verifyNote(bundle.note, vkeyField.value);
      const leafHash = await sha256(concat(Uint8Array.of(0), bundle.extra));
      const root = await rootFromProof(leafHash, bundle.index, cp.size, bundle.hashes);
      if (!equal(root, cp.root)) throw new Error("the recomputed root differs from the signed root");
      out.textContent = "verified in this browser: leaf " + bundle.index + " is in the checkpoint of size " +
        cp.size + " signed by " + vkeyField.value.split("+")[0];
      out.className = "good";
    } catch (e) {
      out.textContent = "NOT verified: " + e.message;
      out.className = "bad";
    }
  });
})();
