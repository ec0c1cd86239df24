#!/usr/bin/env node
/*
 * perception_sub.js: a reference subscriber for the perception node, in JavaScript (Node.js).
 *
 * Written from the README's "Subscribing: the wire format" section (wire version 2): zeromq.js
 * (v6) for the SUB socket, JSON.parse for headers and documents, pngjs for `png` payloads. It
 * checks every message as the README's "Robustness" table says (sizes before allocation, every
 * header field with its type and range, the geometry), decodes every payload encoding (none,
 * bitpack, rle, png), splits atomic frames, keeps the latched <ns>/info class table, and prints
 * one JSON line per message on stdout. A message that fails a check is skipped with one line on
 * stderr. A message of another wire version, or of a kind or compression this reader does not know
 * (from a newer publisher: README "Versioning"), is no malformed one: its line names the fix, and
 * each such reason is said the 1st, 10th, 100th, then every 1000th time, as the Python
 * reader's warning, so a node of another version does not flood stderr. ZeroMQ takes frames of at most max(5 x --max-mask-pixels, 1 MiB) bytes (maxMessageSize:
 * the largest frame of a valid message, an rle payload at worst); a publisher that sends a larger
 * one is cut off by ZeroMQ for good, so the socket's events are watched for a connection dropped
 * without ZeroMQ's own reconnect, and the client says so on stderr and connects again. What ZeroMQ
 * queues before the client reads it is bounded by --max-queue-mb (default 256 MiB): ZeroMQ counts
 * its receive queue (receiveHighWaterMark, ZMQ_RCVHWM) in whole messages, whatever their size, so
 * the queue gets max(1, --max-queue-mb MiB / that frame limit) messages, as the Python reader's
 * (subscribe.rcvhwm_for); a full queue stops ZeroMQ reading the connection, it drops nothing. It
 * keeps track of at most --max-topics distinct topics (default 256), as the Python reader does: those
 * of the lines it prints (an atomic frame's masks each on its own topic), in the order they first
 * came, <ns>/info counted from the start with --namespace; a valid message on one topic more is
 * skipped and counted, the first one with a line on stderr, so a publisher sending on ever new topics
 * cannot grow its memory (class tables are kept for tracked info topics only). When
 * nothing at all arrived it ends with one line, "no messages received from E in S s; is the node
 * running? ...", and exit status 4, as `perception listen` does; when messages came but every one
 * was skipped (another wire version, a newer publisher, malformed), with one line "nothing read
 * from E in S s: ..." naming why and the fix, and exit status 2, as `perception listen` and
 * `perception record`.
 *
 * The rules every reader (Python, C, JavaScript) follows alike, so that one message is taken or
 * refused by all three: JSON with no key twice in one object (JSON.parse keeps the last silently:
 * a scan of the text finds them), no lone UTF-16 surrogate escape, no \u0000 in a string or key, no
 * number overflowing to infinity (1e400), nesting at most 32 deep and integer literals of at most 20
 * characters, no byte order mark; an integer field takes any number of integral value (2, 2.0, 2e0),
 * and a wire_version that is not one is malformed (an integer this reader does not speak is a version
 * mismatch); strings are bounded in characters (code points, not UTF-16 units); a topic (and the
 * topic an atomic frame's mask name makes) holds no control character (U+0000-001F, U+007F-009F,
 * U+2028, U+2029); bitpack carries binary masks only; a topic agrees with its message (no JSON
 * document on a mask topic, one whose last part is drivable, lane, obstacle or class_map or whose
 * part before the last is obstacle, nor on frame; atomic frames only on <ns>/frame; masks not on
 * stats, obstacles, info or frame); an <ns>/info document has the README's schema (wire_version,
 * model_id, unknown_id, classes of unique ids with name and color_rgb [r, g, b] in 0..255); an atomic
 * frame's mask names are relative, without empty, '.' or '..' parts, not ending in a reserved name,
 * and make valid topics; a png's IHDR has compression and filter method 0, its chunks are whole with
 * their CRCs right up to IEND, each of a type of four letters, IHDR once, no critical chunk but IHDR,
 * PLTE, IDAT and IEND, the IDAT chunks one run, and its image data is one whole zlib stream
 * (checksum included, nothing after it) that inflates to exactly the declared rows, each starting
 * with a filter byte of 0..4; pngjs then reads only IHDR, the IDAT chunks and IEND (ancillary chunks
 * such as tRNS, and a PLTE, which means nothing in a greyscale image, are ignored). Interlaced PNGs
 * are refused, by every reader (pngjs bounds its inflate by the IHDR only for non-interlaced ones);
 * the node never sends them.
 *
 * Nanosecond fields are decimal strings on the wire: JSON.parse would round a number of ~1.8e18
 * (beyond Number.MAX_SAFE_INTEGER = 2^53 - 1). They are read with BigInt, exactly.
 *
 *   cd clients/js && npm ci
 *   node clients/js/perception_sub.js --endpoint tcp://127.0.0.1:5556 --namespace perception/front
 *   node clients/js/perception_sub.js --topic perception/front/lane --count 100 --dump lane.raw
 *
 * Flags: --max-mask-pixels is a whole number in 1..268435456 (16384 x 16384), --max-queue-mb and
 * --max-topics ones in 1..65536, --count a whole number, --namespace and --topic not empty; any other
 * value is refused with one line, exit 2; so is an --endpoint no subscriber can connect to: inproc://
 * (one process's own) or one with * (tcp://*:5556, tcp://127.0.0.1:*, ipc://*: for a node's bind),
 * and a --namespace or --topic with a leading '/' (a ROS 2 name: wire topics have none).
 * A first SIGINT/SIGTERM stops it with its summary line; a second one ends it at once (130, 143).
 * --topic takes exact topics (a longer one sharing the prefix is dropped); a mask topic <ns>/<mask>
 * also subscribes to <ns>/frame (a per-class <ns>/obstacle/<class> also to the frame topic one
 * level up), where an --atomic-frames node sends it, and keeps only the asked-for masks of each
 * frame; --topic <ns>/frame gives every mask of the frame. Only messages the client takes count
 * for --idle: those dropped as not asked for (a longer topic, an atomic frame without an asked-for
 * mask) are counted, and when nothing else came the last line names them (a --topic typo, or a
 * namespace given as a topic), as `perception listen` does.
 */
"use strict";

const fs = require("fs");
const zlib = require("zlib");
const zmq = require("zeromq");
const { PNG } = require("pngjs");
const { performance } = require("perf_hooks");

// Milliseconds on the monotonic clock, for every deadline and interval (--duration, --idle, the
// reconnect grace): a step of the system clock (NTP, chrony) moves Date.now() but not this, so a
// step back cannot stall the client nor a step forward end it early. Date.now() is for stamps only.
const monotonicMs = () => performance.now();

// Limits of the README's robustness table.
const MAX_TOPIC_BYTES = 256;
const MAX_HEADER_BYTES = 16 * 1024;
const MAX_JSON_PAYLOAD_BYTES = 1024 * 1024;
const MAX_HEADER_STRING = 256;
const MAX_LATENCY_ENTRIES = 32;
const MAX_LATENCY_MS = 1e12;
const MAX_MASK_SIDE = 16384;
const MAX_MASK_PIXELS_FLAG = MAX_MASK_SIDE * MAX_MASK_SIDE;
const MAX_FRAME_MASKS = 32;
const FRAME_PIXEL_FACTOR = 4;
const MAX_JSON_DEPTH = 32;
const WIRE_VERSION = 2;
// rle, the largest encoding: a 5-byte run a pixel at worst.
const RLE_RUN_BYTES = 5;
// --max-queue-mb: its default and largest value (MiB), as perception/options.py's.
const DEFAULT_MAX_QUEUE_MB = 256;
const MAX_QUEUE_MB = 65536;
// --max-topics: its default and largest value, as perception/options.py's.
const DEFAULT_MAX_TOPICS = 256;
const MAX_TOPICS = 65536;
// How long after a dropped connection ZeroMQ has to announce its own reconnect (it does so at once)
// before the client takes the connection for dead and connects again (watchConnection).
const RECONNECT_GRACE_MS = 100;
const INT64_MAX = (1n << 63n) - 1n;
const NS_PER_S = 1000000000n;
// Topic names that never name a mask: the JSON documents' (the first three) and atomic frames'.
const JSON_NAMES = ["stats", "obstacles", "info"];
const RESERVED_NAMES = [...JSON_NAMES, "frame"];
// Topic names that never carry a JSON document: the node's masks' and atomic frames'.
const NO_JSON_NAMES = ["drivable", "lane", "obstacle", "class_map", "frame"];
// Control characters, which no topic (nor the topic a frame's mask name makes) may hold.
// perception/wire.py's _CONTROL: C0, DEL, C1, the line and paragraph separators, and the invisible
// and bidirectional format characters.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\u{e0000}-\u{e007f}]/u;

class WireError extends Error {}
// A message of another wire version, or of a kind or compression this reader does not know on an
// otherwise valid header (from a newer publisher): its reason ends with the fix.
class UpgradeError extends WireError {}

function fail(message) {
  throw new WireError(message);
}

function failUpgrade(message) {
  throw new UpgradeError(message);
}

const NEWER_PUBLISHER_FIX = "this reader does not know (from a newer publisher?): upgrade this reader";
// The reasons of UpgradeError skips counted apart for the rate limit (Subscriber.handle).
const UPGRADE_REASONS = 16;
// The topics of messages dropped as not asked for kept to name in the last line, and the characters
// of each kept (Subscriber.noteUnasked), as perception/subscribe_unasked.py.
const UNASKED_KEPT = 3;
const UNASKED_TOPIC_CHARS = 120;

// ---------------------------------------------------------------------------------------------
// Fields, each checked for presence, type and range.
// ---------------------------------------------------------------------------------------------

function getInt(obj, name, lo, hi) {
  const v = obj[name];
  // seq and pub_seq are JSON numbers: exact in a double up to 2^53 - 1 (Number.MAX_SAFE_INTEGER, the
  // largest hi here), which JSON.parse holds.
  if (typeof v !== "number") fail(`field '${name}' is missing or not a number`);
  if (!Number.isInteger(v)) fail(`field '${name}' is not an integer`);
  if (v < lo || v > hi) fail(`field '${name}' is ${v}, outside ${lo}..${hi}`);
  return v;
}

function getNumber(obj, name, lo, hi) {
  const v = obj[name];
  if (typeof v !== "number" || !Number.isFinite(v)) fail(`field '${name}' is missing or not a finite number`);
  if (v < lo || v > hi) fail(`field '${name}' is ${v}, outside ${lo}..${hi}`);
  return v;
}

// Characters (code points), as the README bounds strings and Python's len() counts them: .length
// counts UTF-16 units, two for a character beyond U+FFFF.
function tooLong(s) {
  return s.length > MAX_HEADER_STRING && [...s].length > MAX_HEADER_STRING;
}

function getString(obj, name) {
  const v = obj[name];
  if (typeof v !== "string") fail(`field '${name}' is missing or not a string`);
  if (tooLong(v)) fail(`field '${name}' is longer than ${MAX_HEADER_STRING} characters`);
  return v;
}

function getObject(obj, name) {
  const v = obj[name];
  if (v === null || typeof v !== "object" || Array.isArray(v)) fail(`field '${name}' is missing or not an object`);
  return v;
}

// A nanosecond field: a decimal string of 1..19 digits, at most 2^63 - 1, read exactly as a BigInt.
function getNs(obj, name) {
  const v = obj[name];
  if (typeof v !== "string" || !/^[0-9]{1,19}$/.test(v)) fail(`field '${name}' is not a decimal string of 1..19 digits`);
  const ns = BigInt(v);
  if (ns > INT64_MAX) fail(`field '${name}' is beyond 2^63-1`);
  return ns;
}

// What JSON.parse lets through that a reader must refuse, in one walk of the parsed value (iterative:
// a hostile document must not exhaust the stack here either): nesting deeper than MAX_JSON_DEPTH, a
// number that overflowed to Infinity (1e400), a string or key holding a lone UTF-16 surrogate
// (a \ud800 escape without its pair, which UTF-8 cannot carry) or a \u0000 escape (a NUL, which
// every reader refuses: the C one cannot keep it). The reason, or null.
const NUL_PROBLEM = "holds a \\u0000 escape (a NUL character, refused by every reader)";

function walkProblem(doc) {
  const stack = [[doc, 1]];
  while (stack.length) {
    const [node, d] = stack.pop();
    if (typeof node === "number" && !Number.isFinite(node)) return "holds a number that overflows to infinity";
    if (typeof node === "string" && !node.isWellFormed()) return "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair)";
    if (typeof node === "string" && node.includes("\0")) return NUL_PROBLEM;
    if (node === null || typeof node !== "object") continue;
    if (d > MAX_JSON_DEPTH) return `is nested deeper than ${MAX_JSON_DEPTH}`;
    if (!Array.isArray(node)) {
      for (const key of Object.keys(node)) {
        if (!key.isWellFormed()) return "holds a lone UTF-16 surrogate escape in a key";
        if (key.includes("\0")) return NUL_PROBLEM;
      }
    }
    for (const child of Object.values(node)) stack.push([child, d + 1]);
  }
  return null;
}

// The first key given twice in one object of a JSON text, or null. Hand-written because JSON.parse
// cannot report duplicates: it keeps the last of two equal keys silently (cJSON finds the first,
// Python's reader refuses them), so every reader refuses them. The text is valid JSON here
// (JSON.parse took it): one linear pass, a Set of the decoded keys of each open object.
function repeatedKey(text) {
  const open = []; // per open container: the Set of its keys (an object) or null (an array)
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) { // a string: find its closing quote, stepping over escapes
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      if (expectKey) {
        const raw = text.slice(i, j + 1);
        const key = raw.includes("\\") ? JSON.parse(raw) : raw.slice(1, -1);
        const keys = open[open.length - 1];
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) { // {
      open.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) { // [
      open.push(null);
    } else if (c === 0x7d || c === 0x5d) { // } ]
      open.pop();
      expectKey = false;
    } else if (c === 0x2c) { // ,
      expectKey = open[open.length - 1] !== null;
    }
  }
  return null;
}

function parseJson(buf, maxBytes, what) {
  if (buf.length > maxBytes) fail(`${what} has ${buf.length} bytes, more than ${maxBytes}`);
  let text;
  try {
    // ignoreBOM: a leading U+FEFF stays in the text (and JSON.parse refuses it, as Python's json does).
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(buf);
  } catch {
    fail(`${what} is not UTF-8`);
  }
  // Integer literals (no fraction, no exponent) of at most 20 characters, sign included, as the
  // README bounds them (JSON.parse would turn 5,000 digits into Infinity); strings are matched
  // whole and skipped, so digits inside them do not count.
  const tokens = /"(?:[^"\\]|\\.)*"|(?<![\d.eE+-])(?:-\d{20,}|\d{21,})(?![.\deE])/g;
  for (const match of text.matchAll(tokens)) {
    if (match[0][0] !== '"') fail(`${what} holds an integer of ${match[0].length} characters (limit 20)`);
  }
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    fail(`${what} is not JSON (${String(err.message).slice(0, 80)})`); // RangeError too: nested too deeply
  }
  const problem = walkProblem(doc);
  if (problem !== null) fail(`${what} ${problem}`);
  const twice = repeatedKey(text);
  if (twice !== null) fail(`${what} gives key '${twice.slice(0, 40)}' twice in one object`);
  return doc;
}

function checkVersion(h) {
  // An integer like any other (2.0 is 2); a version that is not one is malformed, not another version.
  const v = h.wire_version;
  if (typeof v !== "number" || !Number.isInteger(v)) fail("field 'wire_version' is missing or not an integer");
  if (v !== WIRE_VERSION) {
    failUpgrade(`wire version ${v}, this reader speaks version ${WIRE_VERSION}; run the same perception version on both sides`);
  }
}

function checkTopic(buf) {
  if (buf.length === 0 || buf.length > MAX_TOPIC_BYTES) fail(`topic has ${buf.length} bytes, expected 1..${MAX_TOPIC_BYTES}`);
  let topic;
  try {
    topic = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(buf);
  } catch {
    fail("topic is not UTF-8");
  }
  if (CONTROL.test(topic)) fail("topic holds control characters");
  return topic;
}

// The last /-separated part of a topic (the whole topic where it has no /).
function topicName(topic) {
  return topic.slice(topic.lastIndexOf("/") + 1);
}

// Where an --atomic-frames node sends mask topic <ns>/<mask>: inside <ns>/frame. For a per-class
// <ns>/obstacle/<class> the namespace is one level up, so both <ns>/obstacle/frame and <ns>/frame.
// None for a JSON or frame topic (last part stats, obstacles, info or frame) or one without a '/'.
// As perception/subscribe.py's _frame_topics_of.
function frameTopicsOf(topic) {
  const cut = topic.lastIndexOf("/");
  const ns = topic.slice(0, Math.max(cut, 0));
  if (ns === "" || RESERVED_NAMES.includes(topic.slice(cut + 1))) return [];
  const found = [`${ns}/frame`];
  const up = ns.lastIndexOf("/");
  if (up > 0 && ns.slice(up + 1) === "obstacle") found.push(`${ns.slice(0, up)}/frame`);
  return found;
}

// Whether a JSON document may go on the topic: not on a mask topic (its last part drivable, lane,
// obstacle or class_map, or a per-class <ns>/obstacle/<class>) nor on frame; any other name is open
// (the publisher's publish_json takes any).
function jsonFitsTopic(topic) {
  const parts = topic.split("/");
  return !NO_JSON_NAMES.includes(parts[parts.length - 1]) && !(parts.length > 1 && parts[parts.length - 2] === "obstacle");
}

// Why an atomic frame's mask name cannot make the topic <ns>/<name>, or null: it is relative, made
// of /-separated parts none of which is empty, '.' or '..' (a per-class mask is obstacle/<class>),
// the last not a name reserved for JSON documents or frames.
function maskNameProblem(name) {
  if (typeof name !== "string" || !name || tooLong(name)) return `is not a string of 1..${MAX_HEADER_STRING} characters`;
  const parts = name.split("/");
  if (parts.some((p) => p === "" || p === "." || p === "..")) return "has an empty, '.' or '..' part";
  if (RESERVED_NAMES.includes(parts[parts.length - 1])) return "ends in a name reserved for JSON documents or frames";
  return null;
}

// ---------------------------------------------------------------------------------------------
// Mask headers.
// ---------------------------------------------------------------------------------------------

function parseMaskHeader(h) {
  checkVersion(h);
  if (getString(h, "kind") !== "mask") fail(`header kind is not 'mask'`);
  const hdr = getObject(h, "header");
  const stamp = getObject(hdr, "stamp");
  const m = {
    sec: getInt(stamp, "sec", 0, 2 ** 31 - 1),
    nanosec: getInt(stamp, "nanosec", 0, 999999999),
    frame_id: getString(hdr, "frame_id"),
    height: getInt(h, "height", 1, MAX_MASK_SIDE),
    width: getInt(h, "width", 1, MAX_MASK_SIDE),
    compression: getString(h, "compression"),
    values: getString(h, "values"),
    seq: getInt(h, "seq", 0, Number.MAX_SAFE_INTEGER),
    pub_seq: getInt(h, "pub_seq", 0, Number.MAX_SAFE_INTEGER),
    capture_ns: getNs(h, "capture_ns"),
    publish_ns: getNs(h, "publish_ns"),
    model_id: getString(h, "model_id"),
    source_height: getInt(h, "source_height", 1, MAX_MASK_SIDE),
    source_width: getInt(h, "source_width", 1, MAX_MASK_SIDE),
    binning_x: getNumber(h, "binning_x", 1e-6, 1e6),
    binning_y: getNumber(h, "binning_y", 1e-6, 1e6),
  };
  const encoding = getString(h, "encoding");
  const step = getInt(h, "step", 0, Number.MAX_SAFE_INTEGER);
  const bigendian = getInt(h, "is_bigendian", 0, 1);
  if (encoding !== "mono8" || step !== m.width || bigendian !== 0) {
    fail(`encoding '${encoding.slice(0, 20)}' step ${step} is_bigendian ${bigendian}, expected mono8, step == width, 0`);
  }
  if (m.values !== "binary" && m.values !== "class_ids") fail(`field 'values' is '${m.values.slice(0, 40)}'`);
  if (m.compression === "bitpack" && m.values === "class_ids") fail("bitpack for class ids; bitpack carries binary masks only");
  // header.stamp is the same instant as capture_ns (builtin_interfaces/Time).
  if (BigInt(m.sec) !== m.capture_ns / NS_PER_S || BigInt(m.nanosec) !== m.capture_ns % NS_PER_S) {
    fail(`header.stamp ${m.sec}.${m.nanosec} is not capture_ns ${m.capture_ns}`);
  }
  const latency = getObject(h, "latency_ms");
  const stages = Object.entries(latency);
  if (stages.length > MAX_LATENCY_ENTRIES ||
      stages.some(([k, v]) => typeof v !== "number" || !(Math.abs(v) <= MAX_LATENCY_MS) || tooLong(k))) {
    fail(`field 'latency_ms' is not at most ${MAX_LATENCY_ENTRIES} numbers in -1e12..1e12 under names of at most ${MAX_HEADER_STRING} characters`);
  }
  // Geometry: the region of the camera frame the mask covers, and frame pixels per mask pixel.
  const roi = getObject(h, "roi");
  if (typeof roi.do_rectify !== "boolean") fail("field 'roi.do_rectify' is not a boolean");
  m.roi = [getInt(roi, "x_offset", 0, MAX_MASK_SIDE), getInt(roi, "y_offset", 0, MAX_MASK_SIDE),
    getInt(roi, "width", 1, MAX_MASK_SIDE), getInt(roi, "height", 1, MAX_MASK_SIDE)];
  const [x, y, w, hh] = m.roi;
  if (x + w > m.source_width || y + hh > m.source_height) {
    fail(`roi ${w}x${hh}+${x}+${y} reaches outside the ${m.source_width}x${m.source_height} frame`);
  }
  // binning = roi size / mask size; the publisher rounds it to 9 decimals.
  if (Math.abs(m.binning_x * m.width - w) > 1e-6 * w + 1e-6 + 1e-9 * m.width ||
      Math.abs(m.binning_y * m.height - hh) > 1e-6 * hh + 1e-6 + 1e-9 * m.height) {
    fail(`binning ${m.binning_x} x ${m.binning_y} does not map the ${m.width}x${m.height} mask onto the ${w}x${hh} roi`);
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Payload decoders: the declared size is checked before anything is allocated.
// ---------------------------------------------------------------------------------------------

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const PNG_IEND = Buffer.from([0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);
const PNG_CRITICAL = ["IHDR", "PLTE", "IDAT", "IEND"];

// The PNG's chunks whole (each within the payload, its CRC right, IEND reached), each of a type of
// four letters, IHDR once, no critical chunk (its type's first letter upper case) but IHDR, PLTE,
// IDAT and IEND, the IDAT chunks one run, and its image data one whole zlib stream (its end and
// Adler-32 there, no byte after it in the IDAT data) inflating to exactly the declared rows (a
// filter byte of 0..4 and the pixels each), as every reader checks. pngjs alone would take a few rows
// more than the IHDR says, or fill rows missing from the image data with whatever its buffer held.
// The inflation stops one byte past the declared size. Returns the PNG that pngjs reads: signature,
// IHDR, the IDAT chunks and IEND (ancillary chunks and a PLTE are ignored, as are bytes after IEND).
function checkPngChunks(p, height, width) {
  const idat = [];
  let offset = 8;
  let idatAt = 0;
  let idatEnd = 0;
  for (;;) {
    if (p.length - offset < 12) fail("png payload is cut short (no IEND chunk)");
    const length = p.readUInt32BE(offset);
    const kind = p.toString("latin1", offset + 4, offset + 8);
    if (length > p.length - offset - 12) fail(`png payload is cut short (its '${kind}' chunk runs past the end)`);
    if (zlib.crc32(p.subarray(offset + 4, offset + 8 + length)) !== p.readUInt32BE(offset + 8 + length)) {
      fail(`png payload's '${kind}' chunk has a bad CRC`);
    }
    if (!/^[A-Za-z]{4}$/.test(kind)) fail(`png payload has a chunk of type '${kind}', not four ASCII letters`);
    if (kind === "IHDR" && offset !== 8) fail("png payload has a second IHDR chunk");
    if (kind[0] <= "Z" && !PNG_CRITICAL.includes(kind)) fail(`png payload has an unknown critical chunk '${kind}'`);
    if (kind === "IDAT") {
      if (idat.length && idatEnd !== offset) fail("png payload's IDAT chunks are not consecutive");
      if (!idat.length) idatAt = offset;
      idat.push(p.subarray(offset + 8, offset + 8 + length));
      idatEnd = offset + 12 + length;
    }
    offset += 12 + length;
    if (kind === "IEND") break;
  }
  const rows = height * (width + 1);
  const data = Buffer.concat(idat);
  let raw, used;
  try {
    // info: the engine's bytesWritten is the input the stream took up to its end.
    const { buffer, engine } = zlib.inflateSync(data, { maxOutputLength: rows + 1, info: true });
    [raw, used] = [buffer, engine.bytesWritten];
  } catch (err) {
    if (err.code === "ERR_BUFFER_TOO_LARGE") raw = { length: rows + 1 };
    else if (err.code === "Z_BUF_ERROR") fail("png payload's zlib stream is cut short (no end of stream and Adler-32 checksum)");
    else fail(`png payload's image data does not inflate (${String(err.message).slice(0, 80)})`);
  }
  if (raw.length !== rows) {
    fail(`png payload's image data holds ${raw.length > rows ? "more" : "less"} than the ${height} rows of ${width} pixels its header declares`);
  }
  if (used !== data.length) fail("png payload's image data has bytes after the end of its zlib stream");
  for (let row = 0; row < height; row++) {
    const filter = raw[row * (width + 1)];
    if (filter > 4) fail(`png payload has a bad adaptive filter value (${filter} starts row ${row}; PNG defines 0..4)`);
  }
  return Buffer.concat([p.subarray(0, 33), p.subarray(idatAt, idatEnd), PNG_IEND]); // 33: signature and IHDR
}

function decodePng(p, height, width) {
  // The IHDR first (29 bytes): a non-interlaced 8-bit greyscale image of the header's size. pngjs
  // bounds its inflate by the IHDR size only for non-interlaced images, hence the refusal.
  if (p.length < 29 || !p.subarray(0, 8).equals(PNG_SIGNATURE) || p.readUInt32BE(8) !== 13 ||
      p.toString("latin1", 12, 16) !== "IHDR") {
    fail("png payload is not a PNG (no signature and IHDR chunk)");
  }
  const [w, h, bitDepth, colour, method, filtering, interlace] =
    [p.readUInt32BE(16), p.readUInt32BE(20), p[24], p[25], p[26], p[27], p[28]];
  if (w !== width || h !== height || bitDepth !== 8 || colour !== 0) {
    fail(`png payload is a ${w}x${h} image of depth ${bitDepth}, colour type ${colour}; header says 8-bit greyscale ${width}x${height}`);
  }
  if (method !== 0 || filtering !== 0) {
    fail(`png payload's IHDR has compression method ${method} and filter method ${filtering}; PNG defines only 0`);
  }
  if (interlace !== 0) fail("png payload is interlaced; masks are sent non-interlaced");
  const critical = checkPngChunks(p, height, width);
  let png;
  try {
    png = PNG.sync.read(critical, { checkCRC: true });
  } catch (err) {
    fail(`png payload is not a readable PNG (${String(err.message).slice(0, 120)})`);
  }
  // pngjs hands back RGBA: grey in each of R, G and B (no tRNS reaches it, so no pixel is made transparent).
  const out = Buffer.allocUnsafe(height * width);
  for (let i = 0; i < out.length; i++) out[i] = png.data[4 * i];
  return out;
}

function decodePayload(compression, p, height, width) {
  const pixels = height * width;
  switch (compression) {
    case "none":
      if (p.length !== pixels) fail(`none payload has ${p.length} bytes, ${height}x${width} needs ${pixels}`);
      return Buffer.from(p);
    case "bitpack": {
      if (p.length !== Math.ceil(pixels / 8)) fail(`bitpack payload has ${p.length} bytes, needs ${Math.ceil(pixels / 8)}`);
      const out = Buffer.allocUnsafe(pixels);
      for (let i = 0; i < pixels; i++) out[i] = (p[i >> 3] >> (7 - (i & 7))) & 1 ? 255 : 0;
      return out;
    }
    case "rle": {
      if (p.length % 5 !== 0) fail(`rle payload has ${p.length} bytes, not a multiple of 5`);
      if (p.length / 5 > pixels) fail("rle payload has more runs than the mask has pixels");
      const out = Buffer.allocUnsafe(pixels);
      let i = 0;
      for (let k = 0; k < p.length; k += 5) {
        const len = p.readUInt32LE(k + 1);
        if (len === 0) fail("rle payload holds a zero-length run");
        if (len > pixels - i) fail(`rle runs cover more than ${pixels} pixels`);
        out.fill(p[k], i, i + len);
        i += len;
      }
      if (i !== pixels) fail(`rle runs cover ${i} pixels, needs ${pixels}`);
      return out;
    }
    case "png":
      return decodePng(p, height, width);
    default:
      failUpgrade(`compression '${compression.slice(0, 40)}' is a compression ${NEWER_PUBLISHER_FIX}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The subscriber
// ---------------------------------------------------------------------------------------------

class Subscriber {
  constructor(options) {
    this.options = options;
    this.infos = new Map(); // <ns>/info topic -> {names: Map id -> name, unknownId}
    // With --topic: the asked-for topics, and where an --atomic-frames node sends the asked-for mask
    // topics (frameTopicsOf), subscribed to as well.
    this.topics = new Set(options.topics || []);
    this.frameTopics = new Set([...this.topics].flatMap(frameTopicsOf).filter((t) => !this.topics.has(t)));
    // Both as keys of the topic's exact bytes (latin1 maps each byte to one character).
    this.asked = new Set([...this.topics, ...this.frameTopics].map((t) => Buffer.from(t, "utf8").toString("latin1")));
    this.dumpOffset = 0;
    this.counts = { masks: 0, json: 0, skipped: 0, overTopics: 0, upgrade: 0 };
    // Messages dropped as not asked for (with --topic: a longer topic sharing an asked-for prefix, an
    // atomic frame without an asked-for mask), and the first UNASKED_KEPT distinct topics they came
    // on (more: on others too), as perception/subscribe_unasked.py.
    this.unasked = { messages: 0, topics: [], more: false };
    // The reason of the latest message skipped, of the latest one skipped with an UpgradeError, and
    // how many UpgradeError skips each reason had (its lines are rate-limited): the first
    // UPGRADE_REASONS - 1 reasons each, any further ones together under "".
    this.lastWhy = "";
    this.lastUpgradeWhy = "";
    this.upgradeReasons = new Map();
    // The topics kept track of (track), at most --max-topics: the node's info topic from the start.
    this.maxTopics = options.maxTopics || DEFAULT_MAX_TOPICS;
    this.tracked = new Set();
    if (!this.topics.size && options.namespace) {
      this.tracked.add((options.namespace.endsWith("/") ? options.namespace : options.namespace + "/") + "info");
    }
  }

  // Whether a valid message on topic is taken: its topic is tracked already, or is now while fewer
  // than --max-topics are; else it is counted, and the first one is said on stderr.
  track(topic) {
    if (this.tracked.has(topic)) return true;
    if (this.tracked.size < this.maxTopics) {
      this.tracked.add(topic);
      return true;
    }
    if (this.counts.overTopics++ === 0) {
      process.stderr.write(`perception_sub.js: topic ${topic.slice(0, 80)} is one past the ${this.maxTopics} this client ` +
        "keeps track of (--max-topics): its messages, and those of further new topics, are skipped and counted, without " +
        "another line\n");
    }
    return false;
  }

  infoFor(topic) {
    let best = null;
    let bestLen = 0;
    for (const [infoTopic, info] of this.infos) {
      const ns = infoTopic.slice(0, -"info".length);
      if (topic.startsWith(ns) && ns.length > bestLen) [best, bestLen] = [info, ns.length];
    }
    return best;
  }

  readInfo(topic, doc, line) {
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) fail("info payload is not a JSON object");
    const version = getInt(doc, "wire_version", 0, 1e6);
    const modelId = getString(doc, "model_id");
    const unknownId = getInt(doc, "unknown_id", 0, 255);
    if (!Array.isArray(doc.classes) || doc.classes.length > 255) fail("info 'classes' is not an array of at most 255");
    const names = new Map();
    line.classes = doc.classes.map((c, n) => {
      if (c === null || typeof c !== "object" || Array.isArray(c)) fail(`info class ${n} is not an object`);
      const id = getInt(c, "id", 0, 254);
      const name = getString(c, "name");
      const rgb = c.color_rgb;
      if (names.has(id) || id === unknownId || !Array.isArray(rgb) || rgb.length !== 3 ||
          !rgb.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)) {
        fail(`info class ${n} is not {id (unique, 0..254, not unknown_id), name, color_rgb [r, g, b] in 0..255}`);
      }
      names.set(id, name);
      return { id, name };
    });
    // Kept for a tracked topic only, so at most --max-topics of them.
    if (!this.track(topic)) return false;
    this.infos.set(topic, { names, unknownId });
    Object.assign(line, { info_wire_version: version, model_id: modelId, unknown_id: unknownId });
    return true;
  }

  maskLine(topic, m, mask, framePubSeq) {
    const line = {
      kind: "mask", topic, seq: m.seq, pub_seq: m.pub_seq,
      ...(framePubSeq === null ? {} : { frame_pub_seq: framePubSeq }),
      capture_ns: m.capture_ns.toString(), publish_ns: m.publish_ns.toString(),
      stamp_sec: m.sec, stamp_nanosec: m.nanosec, frame_id: m.frame_id, model_id: m.model_id,
      height: m.height, width: m.width, compression: m.compression, values: m.values,
      source_height: m.source_height, source_width: m.source_width, roi_xywh: m.roi,
      binning_x: m.binning_x, binning_y: m.binning_y,
      crc32: zlib.crc32(mask).toString(16).padStart(8, "0"),
    };
    if (m.values === "class_ids") {
      // Which classes the mask holds, by the names <ns>/info's class table gives them; an id the
      // table does not name, its unknown_id (255) among them, is "id<N>".
      const seen = new Uint8Array(256);
      for (let i = 0; i < mask.length; i++) seen[mask[i]] = 1;
      const info = this.infoFor(topic);
      line.classes_present = [];
      for (let id = 0; id < 256; id++) {
        if (!seen[id]) continue;
        const name = info === null ? undefined : info.names.get(id);
        line.classes_present.push(name === undefined ? `id${id}` : name);
      }
    }
    if (this.options.dump !== null) line.dump_offset = this.dumpOffset;
    return line;
  }

  emitMask(line, mask) {
    if (this.options.dump !== null) {
      fs.writeSync(this.options.dump, mask);
      this.dumpOffset += mask.length;
    }
    process.stdout.write(JSON.stringify(line) + "\n");
    this.counts.masks++;
  }

  handleMask(topic, h, payload) {
    const m = parseMaskHeader(h);
    if (m.height * m.width > this.options.maxPixels) {
      fail(`mask of ${m.height}x${m.width} pixels is over the limit of ${this.options.maxPixels} (--max-mask-pixels)`);
    }
    const mask = decodePayload(m.compression, payload, m.height, m.width);
    if (this.track(topic)) this.emitMask(this.maskLine(topic, m, mask, null), mask);
  }

  // An atomic frame: every part is checked and decoded before any is printed (all or nothing).
  handleFrame(topic, h, parts) {
    const seq = getInt(h, "seq", 0, Number.MAX_SAFE_INTEGER);
    const pubSeq = getInt(h, "pub_seq", 0, Number.MAX_SAFE_INTEGER);
    getNs(h, "capture_ns");
    getNs(h, "publish_ns");
    getString(h, "frame_id");
    const names = h.masks;
    if (!Array.isArray(names) || names.length < 1 || names.length > MAX_FRAME_MASKS) {
      fail(`frame 'masks' is not a list of 1..${MAX_FRAME_MASKS} names`);
    }
    if (parts.length !== 2 + 2 * names.length) {
      fail(`frame message has ${parts.length} parts, expected ${2 + 2 * names.length} for ${names.length} masks`);
    }
    if (!topic.endsWith("/frame")) fail("frame message on a topic not ending in /frame");
    const ns = topic.slice(0, -"frame".length);
    names.forEach((name, i) => {
      const problem = maskNameProblem(name);
      if (problem !== null) fail(`frame mask name ${i} ${problem}`);
      // The mask's own topic, as this reader prints it, under the rules of a received topic.
      try {
        checkTopic(Buffer.from(ns + name, "utf8"));
      } catch (err) {
        if (!(err instanceof WireError)) throw err;
        fail(`frame mask name ${i} makes a bad topic: ${err.message}`);
      }
    });
    if (new Set(names).size !== names.length) fail("frame names a mask twice");
    const heads = names.map((name, i) => {
      const m = parseMaskHeader(parseJson(parts[2 + 2 * i], MAX_HEADER_BYTES, "frame mask header"));
      if (m.seq !== seq) fail(`frame mask '${name.slice(0, 40)}' has seq ${m.seq}, the frame ${seq}`);
      return m;
    });
    const total = heads.reduce((sum, m) => sum + m.height * m.width, 0);
    if (total > FRAME_PIXEL_FACTOR * this.options.maxPixels) {
      fail(`frame declares ${total} pixels, more than ${FRAME_PIXEL_FACTOR} x --max-mask-pixels`);
    }
    const masks = heads.map((m, i) => {
      if (m.height * m.width > this.options.maxPixels) fail("frame mask over the limit (--max-mask-pixels)");
      return decodePayload(m.compression, parts[3 + 2 * i], m.height, m.width);
    });
    // With --topic, the frame topic itself asked for gives every mask; a frame subscribed to for
    // asked-for mask topics (frameTopicsOf) gives only those.
    const whole = this.topics.size === 0 || this.topics.has(topic);
    if (!whole && !names.some((name) => this.topics.has(ns + name))) this.noteUnasked(...names.map((name) => ns + name));
    heads.forEach((m, i) => {
      if ((whole || this.topics.has(ns + names[i])) && this.track(ns + names[i])) this.emitMask(this.maskLine(ns + names[i], m, masks[i], pubSeq), masks[i]);
    });
  }

  handleJson(topic, h, payload) {
    const line = {
      kind: "json", topic, name: getString(h, "name"), seq: getInt(h, "seq", 0, Number.MAX_SAFE_INTEGER),
      pub_seq: getInt(h, "pub_seq", 0, Number.MAX_SAFE_INTEGER), publish_ns: getNs(h, "publish_ns").toString(),
      payload_bytes: payload.length,
    };
    const doc = parseJson(payload, MAX_JSON_PAYLOAD_BYTES, "JSON payload");
    // A document on a topic past --max-topics is skipped and counted (track), without a line.
    if (!(topicName(topic) === "info" ? this.readInfo(topic, doc, line) : this.track(topic))) return;
    process.stdout.write(JSON.stringify(line) + "\n");
    this.counts.json++;
  }

  // One message dropped as not asked for, on topics (strings; cut to UNASKED_TOPIC_CHARS, control
  // characters as '?').
  noteUnasked(...topics) {
    this.unasked.messages++;
    if (this.unasked.more) return; // every topic kept and more seen: nothing left to learn
    for (let topic of topics) {
      // Cut before the control characters are replaced: a hostile publisher's topic of megabytes
      // cost a regex over it for every message dropped.
      if (topic.length > UNASKED_TOPIC_CHARS) topic = topic.slice(0, UNASKED_TOPIC_CHARS - 3) + "...";
      topic = topic.replace(new RegExp(CONTROL.source, "gu"), "?");
      if (this.unasked.topics.includes(topic)) continue;
      if (this.unasked.topics.length < UNASKED_KEPT) this.unasked.topics.push(topic);
      else this.unasked.more = true;
    }
  }

  // The last line when messages came only on longer topics than the --topic values (a typo, a
  // namespace given as a topic): them, and what was probably meant; null when none did.
  unaskedLine(endpoint, seconds) {
    const { messages, topics, more } = this.unasked;
    if (!messages || !topics.length) return null;
    const asked = [...this.topics];
    // The first topic kept that starts with one asked for (else the first: an atomic frame's).
    const first = topics.find((t) => asked.some((a) => t.startsWith(a))) ?? topics[0];
    const namespace = asked.find((t) => first.startsWith(t.replace(/\/+$/, "") + "/"));
    const meant = namespace !== undefined ? `--namespace ${namespace.replace(/\/+$/, "")}` : `--topic ${first}`;
    return `no messages on the topic${asked.length > 1 ? "s" : ""} ${asked.join(", ")} from ${endpoint} in ${seconds.toFixed(1)} s, ` +
      `but ${messages} on other topics (${topics.join(", ")}${more ? ", ..." : ""}): ` +
      `--topic takes whole topic names, --namespace a namespace; did you mean ${meant}?`;
  }

  // Whether a received message is on a topic asked for: subscriptions match byte prefixes, so with
  // --topic a longer topic that starts with an asked-for one (perception/front/lane2 for
  // perception/front/lane) is dropped unread.
  isAsked(parts) {
    return this.asked.size === 0 || parts.length === 0 || this.asked.has(parts[0].toString("latin1"));
  }

  handle(parts) {
    let topic = "?";
    try {
      if (parts.length < 3) fail(`message has ${parts.length} parts, expected 3 (topic, header, payload)`);
      topic = checkTopic(parts[0]);
      const h = parseJson(parts[1], MAX_HEADER_BYTES, "header");
      if (h === null || typeof h !== "object" || Array.isArray(h)) fail("header is not a JSON object");
      checkVersion(h);
      const kind = getString(h, "kind");
      if (kind === "frame") return this.handleFrame(topic, h, parts);
      if (parts.length !== 3) fail(`message has ${parts.length} parts, expected 3 (topic, header, payload)`);
      const name = topicName(topic);
      if (kind === "mask") {
        if (RESERVED_NAMES.includes(name)) {
          fail(`mask on a topic named '${name}', a name reserved for ${name === "frame" ? "atomic frames" : "a JSON document"}`);
        }
        return this.handleMask(topic, h, parts[2]);
      }
      if (kind === "json") {
        if (!jsonFitsTopic(topic)) {
          fail(`JSON document on a topic named '${name.slice(0, 40)}', a ${name === "frame" ? "frame" : "mask"} topic`);
        }
        return this.handleJson(topic, h, parts[2]);
      }
      failUpgrade(`header kind '${kind.slice(0, 40)}' is a message kind ${NEWER_PUBLISHER_FIX}`);
    } catch (err) {
      if (!(err instanceof WireError)) throw err; // a bug here, not a bad message: let it show
      this.counts.skipped++;
      // Received text quoted in the reason stays on one line.
      const why = err.message.replace(new RegExp(CONTROL.source, "gu"), "?");
      const line = `skipped a message on ${topic.slice(0, 80).replace(new RegExp(CONTROL.source, "gu"), "?")}: ${why}`;
      this.lastWhy = why;
      if (!(err instanceof UpgradeError)) {
        process.stderr.write(`perception_sub.js: ${line}\n`);
        return;
      }
      // Rate-limited, as the Python reader: a node of another version sends every message so.
      this.counts.upgrade++;
      this.lastUpgradeWhy = why;
      const key = this.upgradeReasons.has(why) || this.upgradeReasons.size < UPGRADE_REASONS - 1 ? why : "";
      const count = (this.upgradeReasons.get(key) || 0) + 1;
      this.upgradeReasons.set(key, count);
      if (count === 1 || count === 10 || count === 100 || count % 1000 === 0) {
        process.stderr.write(`perception_sub.js: ${line} (${count} so far)\n`);
      }
    }
  }
}

function usage(code) {
  (code ? process.stderr : process.stdout).write(
    "usage: perception_sub.js [--endpoint E] [--namespace NS | --topic T ...] [--count N] [--duration S]\n" +
    "                         [--idle S] [--dump FILE] [--max-mask-pixels N] [--max-queue-mb MB] [--max-topics N]\n" +
    "  (the same options as the C subscriber, clients/c/perception_sub; --max-mask-pixels 1..268435456;\n" +
    "  --max-queue-mb MB, 1..65536 (default 256), is the MiB of received messages ZeroMQ may queue before\n" +
    "  the client takes them: max(1, MB MiB / frame limit) messages, the frame limit being\n" +
    "  max(5 x --max-mask-pixels, 1 MiB); --max-topics N, 1..65536 (default 256), is the distinct topics\n" +
    "  kept track of (NS/info counts from the start): messages on further topics are skipped and counted;\n" +
    "  --topic T is exact, and a mask topic NS/M is also taken out of atomic frames on NS/frame; --idle S\n" +
    "  stops once nothing has arrived for S seconds, from the start until a message)\n");
  process.exit(code);
}

function parseArgs(argv) {
  const o = { endpoint: "tcp://127.0.0.1:5556", namespace: "perception/front", topics: [], count: 0, duration: 0,
    idle: 0, dump: null, maxPixels: 4096 * 4096, maxQueueMb: DEFAULT_MAX_QUEUE_MB, maxTopics: DEFAULT_MAX_TOPICS };
  const numeric = { "--duration": "duration", "--idle": "idle" };
  // Whole numbers: [option, lo, hi] (hi at most 2^53, exact in a double).
  const whole = { "--count": ["count", 0, Number.MAX_SAFE_INTEGER + 1], "--max-mask-pixels": ["maxPixels", 1, MAX_MASK_PIXELS_FLAG],
    "--max-queue-mb": ["maxQueueMb", 1, MAX_QUEUE_MB], "--max-topics": ["maxTopics", 1, MAX_TOPICS] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-h" || a === "--help") usage(0);
    if (i + 1 >= argv.length) usage(2);
    const v = argv[++i];
    if ((a === "--namespace" || a === "--topic") && v === "") {
      process.stderr.write(`perception_sub.js: error: ${a} takes a non-empty name\n`);
      process.exit(2);
    }
    // A ROS 2 name (/perception/front) subscribes to nothing a node sends: refused with the line
    // perception listen, record and view give (perception/options.py leading_slash_error).
    const fixed = v.split("/").filter((part) => part).join("/");
    if ((a === "--namespace" || a === "--topic") && v.startsWith("/") && fixed) {
      process.stderr.write(`perception_sub.js: error: ${a} '${v}' starts with '/': wire topics have no leading '/' (only the ` +
        "ROS 2 names of a recording's channels have one), so it would receive nothing from a node; drop the leading " +
        `'/': '${fixed}'\n`);
      process.exit(2);
    }
    if (a === "--endpoint") o.endpoint = v;
    else if (a === "--namespace") o.namespace = v;
    else if (a === "--topic") o.topics.push(v);
    else if (a === "--dump") o.dump = v;
    else if (a in whole) {
      const [key, lo, hi] = whole[a];
      // Decimal digits with an optional sign, as listen's flags take them (1e3, 0x10 and 10.0 are refused).
      const n = /^[+-]?[0-9]+$/.test(v) ? Number(v) : NaN;
      if (!Number.isInteger(n) || n < lo || n > hi) {
        process.stderr.write(`perception_sub.js: error: ${a} takes a whole number in ${lo}..${hi}, got '${v}'\n`);
        process.exit(2);
      }
      o[key] = n;
    } else if (a in numeric) {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) {
        process.stderr.write(`perception_sub.js: error: ${a} takes a number >= 0, got '${v}'\n`);
        process.exit(2);
      }
      o[numeric[a]] = n;
    } else usage(2);
  }
  return o;
}

// An endpoint this subscriber could never receive on, refused at start with one line (exit 2), as
// `perception listen` refuses it (perception/endpoints.py check_endpoint, connect mode): inproc://
// reaches only sockets of this process's own ZeroMQ context, and `*` (any interface, any free port
// or ipc path) is for a node's bind, which ZeroMQ refuses to connect to. The reason, or null.
function endpointProblem(endpoint) {
  if (endpoint.startsWith("inproc://")) {
    return `endpoint '${endpoint}': inproc:// reaches only sockets of one ZeroMQ context in one process; ` +
      "use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5556) or ipc://PATH";
  }
  if (endpoint === "ipc://*") {
    return `cannot connect to ${endpoint}: ipc://* is for a node's bind only (any free path); connect to the ` +
      "ipc:// path the node logged at start";
  }
  const tcp = /^tcp:\/\/(\[[^\]]*\]|[^:/[\]]+):([0-9]+|\*)$/.exec(endpoint);
  if (tcp === null) return null; // any other form: ZeroMQ's own error at connect
  const [host, port] = [tcp[1], tcp[2]];
  if (host !== "*" && port !== "*") return null;
  const fix = host === "*" && port === "*" ? "connect to the node's address and the port it logged at start, e.g. tcp://127.0.0.1:5556"
    : host === "*" ? `connect to the node's address: tcp://127.0.0.1:${port} on this machine, or the IP address or name of the node's machine`
      : `connect to the port the node logged at start ('publishing ... on tcp://${host}:PORT'), e.g. tcp://${host}:5556`;
  const what = host === "*" && port === "*" ? "host * (every interface) and port * (any free port) are"
    : host === "*" ? "host * (every interface) is" : "port * (any free port) is";
  return `cannot connect to ${endpoint}: ${what} for a node's bind only; ${fix}`;
}

async function main() {
  if (typeof zlib.crc32 !== "function") {
    process.stderr.write(`perception_sub.js: error: Node.js ${process.version} lacks zlib.crc32; use Node.js >= 20.15 (package.json engines)\n`);
    process.exit(2);
  }
  const o = parseArgs(process.argv.slice(2));
  const problem = endpointProblem(o.endpoint);
  if (problem !== null) {
    process.stderr.write(`perception_sub.js: error: ${problem}\n`);
    process.exit(2);
  }
  if (o.dump !== null) {
    try {
      o.dump = fs.openSync(o.dump, "w");
    } catch (err) {
      process.stderr.write(`perception_sub.js: error: cannot open ${o.dump} for writing (${err.code})\n`);
      process.exit(2);
    }
  }
  const sub = new Subscriber(o);
  // The largest frame ZeroMQ takes off the wire, the largest of a valid message: an rle payload of
  // --max-mask-pixels at worst (one 5-byte run a pixel; none, bitpack and png are smaller), or a JSON
  // document. ZeroMQ cuts off the sender of a larger one (watchConnection connects again).
  const maxMessageSize = Math.max(RLE_RUN_BYTES * o.maxPixels, MAX_JSON_PAYLOAD_BYTES);
  // ZeroMQ counts its receive queue in whole messages (a multipart message is one), whatever their
  // size: as many as frames of maxMessageSize fit in --max-queue-mb MiB, at least one. A full queue
  // makes ZeroMQ stop reading the connection (TCP pushes back to the publisher); it drops nothing.
  const receiveHighWaterMark = Math.max(1, Math.floor(o.maxQueueMb * 1048576 / maxMessageSize));
  // tcp://[::1]:5556: IPv6 needs ZeroMQ's option.
  const sock = new zmq.Subscriber({ linger: 0, reconnectInterval: 100, reconnectMaxInterval: 250, maxMessageSize,
    receiveHighWaterMark, receiveTimeout: 100, ipv6: o.endpoint.includes('://[') });
  const watch = watchConnection(sock, o, maxMessageSize);
  // An --atomic-frames node sends mask topic <ns>/<mask> only inside <ns>/frame: subscribe to that
  // too (handleFrame keeps the asked-for masks of each frame).
  if (o.topics.length) sock.subscribe(...o.topics, ...sub.frameTopics);
  // Subscriptions match byte prefixes: the trailing / keeps perception/front2 out.
  else sock.subscribe(o.namespace.endsWith("/") ? o.namespace : o.namespace + "/");
  try {
    sock.connect(o.endpoint);
  } catch (err) {
    process.stderr.write(`perception_sub.js: error: cannot connect to ${o.endpoint} (${err.message})\n`);
    process.exit(2);
  }
  // The first SIGINT/SIGTERM stops the loop (the summary line follows); a second one, while the
  // client is still stopping, ends the process at once with 130 or 143, as the Python commands do.
  let stop = false;
  for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143]]) {
    process.on(signal, () => {
      if (!stop) {
        stop = true;
        return;
      }
      process.stderr.write(`perception_sub.js: stopped at once (a second ${signal})\n`);
      process.exit(status);
    });
  }
  const start = monotonicMs();
  let last = start;
  while (!stop) {
    const now = monotonicMs();
    if ((o.count && sub.counts.masks >= o.count) || (o.duration && now - start >= o.duration * 1000)) break;
    watch.check();
    // --idle is due (only messages not asked for came since the last one taken: a stream of them
    // leaves no receive timing out): it ends the client unless a message is waiting already.
    if (o.idle && now - last >= o.idle * 1000 && !sock.readable) break;
    let parts;
    try {
      parts = await sock.receive();
    } catch (err) {
      if (err.code !== "EAGAIN") throw err;
      // receiveTimeout: nothing is waiting. --idle counts only then, so a client that was
      // descheduled does not stop with messages still queued.
      if (o.idle && monotonicMs() - last >= o.idle * 1000) break;
      continue;
    }
    // Only messages taken count as arrivals for --idle: a --topic typo that is a prefix of real
    // topics (perception/front/lan) must not keep the client waiting for ever.
    const unaskedBefore = sub.unasked.messages;
    if (sub.isAsked(parts)) sub.handle(parts);
    else sub.noteUnasked(parts[0].subarray(0, MAX_TOPIC_BYTES + 1).toString("utf8")); // no asked topic is longer
    if (sub.unasked.messages === unaskedBefore) last = monotonicMs();
  }
  const { masks, json, skipped, overTopics } = sub.counts;
  let status = 0;
  const unasked = masks + json + skipped + overTopics === 0 ? sub.unaskedLine(o.endpoint, (monotonicMs() - start) / 1000) : null;
  if (unasked !== null) {
    // Only messages on longer topics than a --topic came: said so (exit 4, as perception listen).
    process.stderr.write(`perception_sub.js: error: ${unasked}\n`);
    status = 4;
  } else if (masks + json + skipped + overTopics === 0) {
    // Nothing at all arrived: the stream is not there (exit 4, as perception listen).
    process.stderr.write(`perception_sub.js: error: no messages received from ${o.endpoint} in ${((monotonicMs() - start) / 1000).toFixed(1)} s; ` +
      `is the node running? check --endpoint / ${o.topics.length ? "--topic" : "--namespace"}\n`);
    status = 4;
  } else if (masks + json === 0) {
    // Messages came, none readable: a bad input (exit 2), as perception listen and record.
    const head = `perception_sub.js: error: nothing read from ${o.endpoint} in ${((monotonicMs() - start) / 1000).toFixed(1)} s: ` +
      `all ${skipped + overTopics} messages received were skipped`;
    if (sub.counts.upgrade) {
      process.stderr.write(`${head}, ${sub.counts.upgrade} from another wire version or a newer publisher (${sub.lastUpgradeWhy})\n`);
    } else if (skipped) {
      process.stderr.write(`${head} as malformed (the last: ${sub.lastWhy}); check that --endpoint is a perception node's, ` +
        "of the same perception version\n");
    } else {
      process.stderr.write(`${head}: on topics past the first ${o.maxTopics}; raise --max-topics or subscribe to fewer (--topic)\n`);
    }
    status = 2;
  } else {
    process.stderr.write(`perception_sub.js: ${masks} masks, ${json} JSON documents, ${skipped} skipped` +
      `${overTopics ? `, ${overTopics} on topics past the first ${o.maxTopics} (--max-topics)` : ""}` +
      `${watch.reconnects ? `, ${watch.reconnects} reconnects` : ""}\n`);
  }
  if (o.dump !== null) fs.closeSync(o.dump);
  sock.close();
  // Exit once the lines written are out (stdout to a pipe is written asynchronously), not when
  // Node.js runs out of work: that could wait on ZeroMQ's context for good (a connect still pending
  // holds it), with only a SIGKILL left to end the client. A reader that never reads is what a
  // second signal is for.
  let pending = 2;
  const flushed = () => { if (--pending === 0) process.exit(status); };
  process.stdout.write("", flushed);
  process.stderr.write("", flushed);
}

// ZeroMQ reconnects by itself after the network or the node dropped the connection, but not after a
// protocol error, above all a frame over maxMessageSize: that publisher is cut off for good. The
// socket's events tell the two apart (ZeroMQ announces its own reconnect, "connect:retry", at once):
// check() connects again to a connection that was up and has been dropped for RECONNECT_GRACE_MS
// with no reconnect announced, with a rate-limited line on stderr.
function watchConnection(sock, o, maxMessageSize) {
  const watch = { up: false, droppedAt: 0, reconnects: 0 };
  sock.events.on("handshake", () => { [watch.up, watch.droppedAt] = [true, 0]; });
  sock.events.on("disconnect", () => {
    if (watch.up) [watch.up, watch.droppedAt] = [false, monotonicMs()];
  });
  sock.events.on("connect:retry", () => { watch.droppedAt = 0; });
  watch.check = () => {
    if (!watch.droppedAt || monotonicMs() - watch.droppedAt < RECONNECT_GRACE_MS) return;
    watch.droppedAt = 0;
    try {
      sock.disconnect(o.endpoint); // its session is gone; this clears the endpoint
    } catch {
      // not connected any more
    }
    sock.connect(o.endpoint);
    const n = ++watch.reconnects;
    if (n === 1 || n === 10 || n === 100 || n % 1000 === 0) { // rate-limited
      process.stderr.write(`perception_sub.js: ZeroMQ dropped the connection to ${o.endpoint} for a protocol error and would ` +
        `not reconnect; most likely the publisher sent a frame over ${maxMessageSize} bytes, more than any valid message ` +
        `of masks up to ${o.maxPixels} pixels holds (ZMQ_MAXMSGSIZE; --max-mask-pixels raises it); reconnected (${n} so far)\n`);
    }
  };
  return watch;
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`perception_sub.js: error: ${err.stack || err}\n`);
    process.exit(1);
  });
}

module.exports = { Subscriber, decodePayload, parseMaskHeader, WireError };
