// Drafts: what the user typed in a conversation and has not sent, kept per
// conversation so that it survives switching chats and (in localStorage) a
// reload. Like the offline cache, drafts are written to the browser's
// storage only for an account without a passphrase; otherwise they live in
// this page's memory. Sending clears a draft, logging out clears them all.
const PREFIX = 'glitr-draft:';
const mem = new Map();
let persist = false;
let account = '';

const key = (conv) => PREFIX + account + ':' + conv;

function storage() {
  try { return persist ? localStorage : null; } catch { return null; }
}

// configure follows the account answer (see cache.allow).
export function configure(acct) {
  account = acct?.account || '';
  persist = !!acct && acct.state === 'ready' && !acct.hasPassphrase && !!account;
  if (!persist) clearStored();
}

export function get(conv) {
  if (mem.has(conv)) return mem.get(conv);
  const s = storage();
  return (s && s.getItem(key(conv))) || '';
}

export function set(conv, text) {
  const s = storage();
  if (text.trim()) {
    mem.set(conv, text);
    if (s) try { s.setItem(key(conv), text); } catch { /* storage full: memory only */ }
  } else {
    mem.delete(conv);
    if (s) s.removeItem(key(conv));
  }
}

function clearStored() {
  try {
    for (const k of Object.keys(localStorage)) if (k.startsWith(PREFIX)) localStorage.removeItem(k);
  } catch { /* no storage */ }
}

// clearAll drops every draft (logging out).
export function clearAll() {
  mem.clear();
  clearStored();
}
