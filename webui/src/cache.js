// The offline cache: what the app last got from the node (account, chat
// list, contacts, preferences, the newest page of each recently opened
// conversation), kept in IndexedDB so that the installed app shows the
// user's chats, read-only, while the node is not running.
//
// It is plain text, not encrypted, and it is only kept for an account
// without a passphrase (docs/webui.md, "Offline cache"): such a node's own
// data directory is readable to whoever has the device, so the cache
// exposes nothing new; a user who set a passphrase asked for the chats to
// be unreadable at rest, and the page has no secret to encrypt them under
// that a thief of the browser profile would not also have. Logging out,
// a 401, a removed device and a fresh node clear it.
const DB = 'glitr-cache', STORE = 'kv';
const KEEP_CONVS = 30; // conversations whose newest page is kept
const KEEP_MSGS = 50; // messages kept per conversation

let dbp = null;
function db() {
  if (!dbp) {
    dbp = new Promise((res, rej) => {
      const r = indexedDB.open(DB, 1);
      r.onupgradeneeded = () => r.result.createObjectStore(STORE);
      r.onsuccess = () => res(r.result);
      r.onerror = () => rej(r.error);
    }).catch(() => null); // no IndexedDB: no offline cache, nothing else changes
  }
  return dbp;
}

function tx(mode, fn) {
  return db().then((d) => d && new Promise((res) => {
    const t = d.transaction(STORE, mode);
    const out = fn(t.objectStore(STORE));
    t.oncomplete = () => res(out && 'result' in out ? out.result : undefined);
    t.onerror = t.onabort = () => res(undefined);
  }));
}

// enabled: whether this account's data may be kept (set from the account
// answer; until then nothing is written).
let enabled = false;

// allow decides from the node's account answer whether to keep a cache,
// and drops one that belongs to another account or that may not be kept.
export async function allow(acct) {
  enabled = !!acct && acct.state === 'ready' && !acct.hasPassphrase && !!acct.account;
  const cached = await read('account');
  if (cached && (!enabled || cached.account !== acct?.account)) await wipe();
  if (enabled) await write('account', acct);
}

export function read(key) {
  return tx('readonly', (s) => s.get(key)).catch(() => undefined);
}

// later runs a write after the render that the data is for (writes keep
// their order: timers of equal delay run in the order they were set).
const later = (fn) => new Promise((res) => setTimeout(() => res(fn()), 0));

export function write(key, value) {
  if (!enabled) return Promise.resolve();
  return later(() => tx('readwrite', (s) => { s.put(value, key); }).catch(() => {}));
}

// saveMessages keeps the newest messages of a conversation (those the
// node gave, never the outbox's pending rows) and remembers which
// conversations were opened last, so that only KEEP_CONVS stay.
export async function saveMessages(conv, msgs) {
  if (!enabled) return;
  await later(() => {});
  const keep = msgs.filter((m) => !m.pending).slice(-KEEP_MSGS);
  const recent = ((await read('recent')) || []).filter((c) => c !== conv);
  recent.unshift(conv);
  const drop = recent.splice(KEEP_CONVS);
  await tx('readwrite', (s) => {
    s.put(keep, 'msgs:' + conv);
    s.put(recent, 'recent');
    for (const c of drop) s.delete('msgs:' + c);
  }).catch(() => {});
}

export const readMessages = (conv) => read('msgs:' + conv);

// cachedAccount is the account the cache belongs to, if it may show it.
export async function cachedAccount() {
  const a = await read('account');
  return a && a.state === 'ready' && !a.hasPassphrase ? a : null;
}

const wipe = () => tx('readwrite', (s) => { s.clear(); }).catch(() => {});

// clear drops the cache and keeps nothing more until allow says so.
export async function clear() {
  enabled = false;
  await wipe();
}
