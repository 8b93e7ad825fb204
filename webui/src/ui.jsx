import { t, language } from './i18n.js';

export function go(path) { location.hash = '#/' + path; }

export function nameOf(acct, contacts, account) {
  if (account && acct === account.account) return account.name || t('you');
  const c = contacts.find((x) => x.account === acct);
  return c ? c.name : acct.slice(0, 8);
}

// displayTitle: the title, or for an untitled conversation the names of
// the other members.
export function displayTitle(c, contacts, account) {
  if (c.title) return c.title;
  const others = (c.members || []).filter((m) => !m.self);
  if (!others.length) return t('you');
  return others.map((m) => nameOf(m.account, contacts, account)).join(', ');
}

const palette = ['#5b6ee1', '#d9534f', '#2e9e6b', '#c27c0e', '#8e5bd6', '#1f8bb3', '#c2417d', '#6a8a1f'];

export function Avatar({ name, src, size }) {
  const n = name || '?';
  let h = 0;
  for (const ch of n) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  const style = size ? `width:${size}px;height:${size}px` : undefined;
  if (src) return <img class="avatar" src={src} alt="" style={style} />;
  return <span class="avatar" aria-hidden="true" style={style} data-c={h % palette.length}>{[...n.trim()][0]?.toUpperCase() || '?'}</span>;
}

export function shortTime(iso) {
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString(language(), { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString(language(), { month: 'short', day: 'numeric' });
}

export function clock(iso) {
  return new Date(iso).toLocaleTimeString(language(), { hour: '2-digit', minute: '2-digit' });
}

export function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const y = new Date(); y.setDate(y.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return t('today');
  if (d.toDateString() === y.toDateString()) return t('yesterday');
  return d.toLocaleDateString(language(), { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
}

export function CopyButton({ text }) {
  const onClick = async (e) => {
    const b = e.currentTarget;
    try { await navigator.clipboard.writeText(text); b.textContent = t('copied'); } catch { /* clipboard denied: the text is selectable */ }
    setTimeout(() => { b.textContent = t('copy'); }, 1500);
  };
  return <button type="button" onClick={onClick}>{t('copy')}</button>;
}

export function BackLink() {
  return <a class="icon-btn back" href="#/" aria-label={t('back')}>‹</a>;
}
