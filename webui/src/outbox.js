// The outbox: messages the user sent that the node has not taken yet. They
// live in IndexedDB, so they survive a reload and a node that is away, and
// go out in the order they were written when the node answers again.
//
// Every entry carries a clientId, sent with the message: the node commits
// a message under it once, and answers a repeat with the message it made
// then (200 instead of 201). So a send whose answer was lost, or one that
// two tabs both make, never posts the message twice.
import { post } from './api.js';

const DB = 'glitr', STORE = 'outbox';
const enc = encodeURIComponent;

// Entries by clientId: {clientId, account, conv, text, replyTo, time, seq,
// state: "queued" | "failed", error}. The map is the truth for this tab;
// IndexedDB is where it survives.
const entries = new Map();
const listeners = new Set();
let account = '';
let started = false;
let seq = 0;
let flushing = null, again = false;
let timer = null, delay = 1000;

let dbp = null;
function db() {
  if (!dbp) {
    dbp = new Promise((res, rej) => {
      const r = indexedDB.open(DB, 1);
      r.onupgradeneeded = () => r.result.createObjectStore(STORE, { keyPath: 'clientId' });
      r.onsuccess = () => res(r.result);
      r.onerror = () => rej(r.error);
    }).catch(() => null); // no IndexedDB (a private window, say): this tab's memory only
  }
  return dbp;
}

async function store(fn) {
  const d = await db();
  if (!d) return;
  await new Promise((res) => {
    const tx = d.transaction(STORE, 'readwrite');
    fn(tx.objectStore(STORE));
    tx.oncomplete = tx.onerror = tx.onabort = () => res();
  });
}

function emit(ev) { for (const l of listeners) l(ev); }

// subscribe calls fn on every change: {kind: "change"}, or {kind: "sent",
// entry, message} when the node took an entry.
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// pending lists the entries of a conversation, oldest first.
export function pending(conv) {
  return [...entries.values()].filter((e) => e.conv === conv && e.account === account).sort((x, y) => x.seq - y.seq);
}

// start loads what an earlier page of this account left and sends it.
export async function start(acct) {
  account = acct || '';
  started = true;
  const d = await db();
  if (d) {
    const all = await new Promise((res) => {
      const r = d.transaction(STORE).objectStore(STORE).getAll();
      r.onsuccess = () => res(r.result || []);
      r.onerror = () => res([]);
    });
    for (const e of all) if (!entries.has(e.clientId)) entries.set(e.clientId, e);
  }
  for (const e of entries.values()) seq = Math.max(seq, e.seq);
  emit({ kind: 'change' });
  flush();
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

// enqueue adds a message and starts sending; it resolves once the entry
// is stored (a reload after that sends it).
export async function enqueue({ conv, text, replyTo }) {
  const e = { clientId: newClientId(), account, conv, text, replyTo: replyTo || '', time: new Date().toISOString(), seq: Math.max(++seq, Date.now()), state: 'queued', error: null };
  seq = e.seq;
  entries.set(e.clientId, e);
  emit({ kind: 'change' });
  await store((s) => s.put(e));
  flush();
  return e;
}

async function update(e, patch) {
  const n = { ...e, ...patch };
  entries.set(e.clientId, n);
  emit({ kind: 'change' });
  await store((s) => s.put(n));
  return n;
}

async function drop(clientId) {
  entries.delete(clientId);
  await store((s) => s.delete(clientId));
}

// seen settles the entries whose message the app has seen from the node
// (its clientId in a page or a last message): they are sent, whatever
// became of the answer to the send, which a retry then need not wait for.
export function seen(clientIds) {
  let changed = false;
  for (const id of clientIds) {
    if (!entries.has(id)) continue;
    entries.delete(id);
    store((s) => s.delete(id));
    changed = true;
  }
  if (changed) emit({ kind: 'change' });
}

// retry queues a failed entry again.
export async function retry(clientId) {
  const e = entries.get(clientId);
  if (e) await update(e, { state: 'queued', error: null });
  delay = 1000;
  flush();
}

// discard gives up on an entry.
export async function discard(clientId) {
  await drop(clientId);
  emit({ kind: 'change' });
}

// keepsQueued: the node did not refuse the message, it was not there to
// take it (no answer, a proxy or gateway error, shutting down, locked,
// logged out, too busy). The entry waits and goes out later.
export function keepsQueued(err) {
  const s = err.status;
  return s === 0 || s === 401 || s === 408 || s === 423 || s === 429 || s === 502 || s === 503 || s === 504;
}

// flush sends the queued entries in order. It stops at the first one the
// node is not there for (the rest wait behind it, to keep the order) and
// tries again later with a growing delay, or as soon as the app sees the
// node again (flush is called on every reconnection).
export function flush() {
  if (!started) return Promise.resolve();
  if (flushing) { again = true; return flushing; }
  clearTimeout(timer);
  flushing = (async () => {
    do {
      again = false;
      const queue = [...entries.values()].filter((e) => e.account === account && e.state === 'queued').sort((x, y) => x.seq - y.seq);
      for (const e of queue) {
        if (entries.get(e.clientId) !== e) continue; // retried or discarded meanwhile
        let message;
        try {
          message = await post(`/conversations/${enc(e.conv)}/messages`, { text: e.text, replyTo: e.replyTo, clientId: e.clientId });
        } catch (err) {
          if (keepsQueued(err)) {
            // A reconnection seen meanwhile is worth a prompt new try.
            timer = setTimeout(flush, again ? 200 : delay);
            delay = Math.min(delay * 2, 30000);
            return;
          }
          // Refused (a 4xx), or an error the node will not get over by
          // itself: the user sees why and can retry or discard.
          await update(e, { state: 'failed', error: { status: err.status, code: err.code, message: err.message } });
          continue;
        }
        delay = 1000;
        if (entries.get(e.clientId) === e) await drop(e.clientId);
        emit({ kind: 'sent', entry: e, message });
      }
    } while (again);
  })().finally(() => { flushing = null; });
  return flushing;
}

addEventListener('online', () => flush());
