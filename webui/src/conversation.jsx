import { Component } from 'preact';
import { useState, useEffect, useRef, useLayoutEffect, useCallback, useMemo } from 'preact/hooks';
import { get, post, put, del } from './api.js';
import { t } from './i18n.js';
import { Avatar, BackLink, ErrorLine, Icon, clock, dayLabel, displayTitle, nameOf, emojiOnly, errorText, isDirect, linkify, presenceText } from './ui.jsx';
import { ConvDetails, setBlocked } from './screens.jsx';
import * as outbox from './outbox.js';
import * as cache from './cache.js';
import * as drafts from './drafts.js';
import { Attachment, Uploads, upload } from './attach.jsx';

const PAGE = 100;
const EST = 60; // estimated row height (px) until a row is measured
const OVERSCAN = 800; // px rendered above and below the viewport
const QUICK = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const enc = encodeURIComponent;

// lowerBound: first index i with a[i] >= x (a ascending).
function lowerBound(a, n, x) {
  let lo = 0, hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Model holds a window of a conversation's messages by display position,
// their measured heights and the prefix sums the virtual list positions
// rows with. Only the rows near the viewport are in the DOM, so a 100k
// message conversation costs what a 30 message one does. The node's
// messages take positions 0..serverTotal-1; the outbox's entries of the
// conversation follow them as "sending" rows, until a loaded message
// carries their clientId.
class Model {
  constructor() {
    this.total = 0;
    this.serverTotal = 0;
    this.msgs = new Map();
    this.byId = new Map();
    this.clientIds = new Set();
    this.pendingPos = [];
    this.heights = new Float32Array(0);
    this.offsets = new Float64Array(1);
    this.dirty = true;
    this.loading = new Set();
  }
  setTotal(n) {
    if (n === this.total) return;
    if (n > this.heights.length) {
      const h = new Float32Array(Math.max(n, this.heights.length * 2, 64));
      h.set(this.heights);
      h.fill(EST, this.heights.length);
      this.heights = h;
    }
    for (const p of this.msgs.keys()) if (p >= n) this.msgs.delete(p);
    this.total = n;
    this.dirty = true;
  }
  put(m) {
    const old = this.msgs.get(m.position);
    if (old && old.id !== m.id) this.byId.delete(old.id);
    this.msgs.set(m.position, m);
    this.byId.set(m.id, m.position);
    if (m.pending) return;
    if (m.clientId) this.clientIds.add(m.clientId);
    if (m.position >= this.serverTotal) this.serverTotal = m.position + 1;
  }
  // syncPending lays the outbox's entries out after the node's messages.
  syncPending(entries) {
    for (const p of this.pendingPos) {
      const x = this.msgs.get(p);
      if (x && x.pending) { this.msgs.delete(p); this.byId.delete(x.id); }
    }
    this.pendingPos = [];
    const shown = entries.filter((e) => !this.clientIds.has(e.clientId));
    this.setTotal(this.serverTotal + shown.length);
    shown.forEach((e, i) => {
      const position = this.serverTotal + i;
      this.put({
        id: 'pending:' + e.clientId, position, pending: true, clientId: e.clientId, mine: true, text: e.text, time: e.time,
        replyTo: e.replyTo || undefined, status: e.state === 'failed' ? 'failed' : 'sending', error: e.error,
      });
      this.pendingPos.push(position);
    });
  }
  layout() {
    if (!this.dirty) return;
    const n = this.total;
    if (this.offsets.length < n + 1) this.offsets = new Float64Array(Math.max(n + 1, this.offsets.length * 2));
    let acc = 0;
    for (let i = 0; i < n; i++) { this.offsets[i] = acc; acc += this.heights[i]; }
    this.offsets[n] = acc;
    this.dirty = false;
  }
  height() { this.layout(); return this.offsets[this.total]; }
}

export function Conversation(props) {
  const { id, convs, contacts, account, presence, typing, onConvEvent, loadConvs, readOnly } = props;
  const conv = convs?.find((c) => c.id === id);
  // What rows need of the conversation to name authors (a new object only
  // when a member's name changes, so rows do not re-render on every list
  // refetch).
  const namesKey = (conv?.members || []).map((x) => x.account + ':' + x.name).join(',');
  const names = useMemo(() => ({ members: conv?.members || [] }), [namesKey]);
  const model = useRef(null);
  if (!model.current) model.current = new Model();
  const m = model.current;
  const [, setVer] = useState(0);
  const bump = useCallback(() => setVer((v) => v + 1), []);
  const [range, setRange] = useState([0, 0]);
  const [viewH, setViewH] = useState(600);
  const [replyTo, setReplyTo] = useState(null);
  const [editing, setEditing] = useState(null);
  const [showDetails, setShowDetails] = useState(false);
  const [error, setError] = useState(null);
  const [atBottom, setAtBottom] = useState(true);
  const [unreadAbove, setUnreadAbove] = useState(false);
  const [loaded, setLoaded] = useState(false);
  const scroller = useRef(null);
  const rowsRef = useRef(null);
  const stick = useRef(true); // keep the newest message in view
  const pendingScroll = useRef(null);
  const firstUnread = useRef(-1);
  const composerRef = useRef(null);
  const detailsBtn = useRef(null);
  const showDetailsRef = useRef(showDetails);
  showDetailsRef.current = showDetails;
  // The message whose action bar is showing: {id, how, picker}. "hover"
  // ends when the pointer leaves, "focus" when focus leaves; a tap stays
  // until a tap elsewhere or Esc (on a touch screen nothing else ends it).
  const [active, setActive] = useState(null);
  const activeRef = useRef(active);
  activeRef.current = active;
  const activate = useCallback((msgId, how) => setActive((a) => {
    if (a && a.id === msgId && (how !== 'tap' || a.how === 'tap')) return a;
    return { id: msgId, how, picker: a && a.id === msgId ? a.picker : false };
  }), []);
  const deactivate = useCallback((msgId, how) => setActive((a) => (a && a.id === msgId && a.how === how && !a.picker ? null : a)), []);
  const togglePicker = useCallback((msgId) => setActive((a) => ({ id: msgId, how: 'tap', picker: !(a && a.id === msgId && a.picker) })), []);
  useEffect(() => {
    const down = (e) => { if (activeRef.current && !e.target.closest?.('.msg.active')) setActive(null); };
    const key = (e) => {
      if (e.key !== 'Escape' || e.defaultPrevented) return;
      // Esc closes the details panel when no message bar is open.
      if (!activeRef.current) {
        if (showDetailsRef.current) { setShowDetails(false); detailsBtn.current?.focus(); }
        return;
      }
      // Focus in the bar goes back to its message, not to the page (first:
      // that focus would otherwise show the bar again).
      document.activeElement?.closest?.('.msg.active')?.focus();
      setActive(null);
    };
    document.addEventListener('pointerdown', down, true);
    document.addEventListener('keydown', key);
    return () => { document.removeEventListener('pointerdown', down, true); document.removeEventListener('keydown', key); };
  }, []);

  const fetchPage = useCallback(async (before, limit) => {
    const key = before + ':' + limit;
    if (m.loading.has(key)) return;
    m.loading.add(key);
    try {
      const p = await get(`/conversations/${enc(id)}/messages?before=${before}&limit=${limit}`);
      m.serverTotal = p.total;
      m.setTotal(Math.max(m.total, p.total));
      for (const msg of p.messages) m.put(msg);
      if (before === 0) cache.saveMessages(id, p.messages);
      outbox.seen(p.messages.filter((x) => x.clientId).map((x) => x.clientId));
      m.syncPending(outbox.pending(id));
      bump();
      return p;
    } finally {
      m.loading.delete(key);
    }
  }, [id]);

  // Open: the newest page, then scroll to the first unread or the end.
  useEffect(() => {
    let live = true;
    fetchPage(0, PAGE).then((p) => {
      if (!live || !p) return;
      const unread = conv?.unread || 0;
      firstUnread.current = unread > 0 ? Math.max(0, p.total - unread) : -1;
      if (firstUnread.current >= 0) { stick.current = false; pendingScroll.current = firstUnread.current; }
      else pendingScroll.current = 'bottom';
      setLoaded(true);
      performance.mark('glitr-conversation-loaded');
    }).catch(async (e) => {
      // The node is away: the newest messages the cache kept, read-only;
      // the event stream's reconnection refetches them.
      const cm = e.status === 0 ? await cache.readMessages(id) : null;
      if (!live) return;
      if (!cm) { setError(e); return; }
      m.setTotal(cm.length ? cm[cm.length - 1].position + 1 : 0);
      for (const x of cm) m.put(x);
      m.syncPending(outbox.pending(id));
      pendingScroll.current = 'bottom';
      setLoaded(true);
      bump();
    });
    return () => { live = false; };
  }, [id]);

  // Messages that arrive while the tab is hidden or the user reads further
  // up get a "new messages" divider above the first of them, as at open.
  // The divider moves to the first of them when the chat had been read.
  const prevUnread = useRef(0);
  useEffect(() => {
    const before = prevUnread.current;
    prevUnread.current = conv?.unread || 0;
    if (!loaded || !conv || !conv.unread || before > 0) return;
    if (document.visibilityState === 'visible' && stick.current) return;
    firstUnread.current = Math.max(0, conv.messages - conv.unread);
    bump();
  }, [loaded, conv?.unread]);

  // The outbox: its entries show as "sending" rows at the end; one the
  // node took is replaced by the message it became.
  useEffect(() => {
    m.syncPending(outbox.pending(id));
    bump();
    return outbox.subscribe((ev) => {
      if (ev.kind === 'sent' && ev.entry.conv === id) { m.put(ev.message); refresh(); }
      m.syncPending(outbox.pending(id));
      bump();
    });
  }, [id]);

  // Events: refetch the newest page and what is on screen. A burst of
  // events (a catch-up delivers hundreds) costs one refetch per 150 ms.
  const refreshTimer = useRef(null);
  const refresh = useCallback(() => {
    if (refreshTimer.current) return;
    refreshTimer.current = setTimeout(() => {
      refreshTimer.current = null;
      const [s, e] = rangeRef.current;
      fetchPage(0, PAGE).catch(() => {});
      if (e > 0 && e < m.total - PAGE) fetchPage(e, Math.min(PAGE, e - s + 20)).catch(() => {});
    }, 150);
  }, [fetchPage]);
  useEffect(() => () => clearTimeout(refreshTimer.current), []);
  const rangeRef = useRef(range);
  rangeRef.current = range;
  useEffect(() => onConvEvent((f) => {
    if (!f.conversation || f.conversation === id) refresh();
  }), [id, refresh]);

  // Mark read while the conversation is open and visible.
  useEffect(() => {
    if (!loaded || !conv || conv.unread === 0 || document.visibilityState !== 'visible') return;
    const tm = setTimeout(() => post(`/conversations/${enc(id)}/read`).then(() => loadConvs()).catch(() => {}), 300);
    return () => clearTimeout(tm);
  }, [loaded, conv?.unread, conv?.messages]);
  useEffect(() => {
    const on = () => { if (document.visibilityState === 'visible' && conv?.unread) post(`/conversations/${enc(id)}/read`).then(() => loadConvs()).catch(() => {}); };
    document.addEventListener('visibilitychange', on);
    return () => document.removeEventListener('visibilitychange', on);
  }, [conv?.unread]);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => { setViewH(el.clientHeight); onScroll(); });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const computeRange = useCallback(() => {
    const el = scroller.current;
    if (!el) return;
    m.layout();
    const pad = Math.max(0, el.clientHeight - m.height());
    const top = el.scrollTop - pad;
    const s = Math.max(0, lowerBound(m.offsets, m.total, top - OVERSCAN) - 1);
    const e = Math.min(m.total, lowerBound(m.offsets, m.total, top + el.clientHeight + OVERSCAN) + 1);
    const [os, oe] = rangeRef.current;
    if (s !== os || e !== oe) setRange([s, e]);
    // Fetch what is in range but not loaded, a page at a time.
    for (let i = e - 1; i >= s; i--) {
      if (!m.msgs.has(i)) { fetchPage(i + 1, PAGE).catch(() => {}); break; }
    }
  }, [fetchPage]);

  const raf = useRef(0);
  const onScroll = useCallback(() => {
    const el = scroller.current;
    if (!el) return;
    const bottom = el.scrollHeight - el.scrollTop - el.clientHeight < 8;
    stick.current = bottom;
    setAtBottom(bottom);
    const fu = firstUnread.current;
    if (fu >= 0 && fu < m.total) {
      m.layout();
      const pad = Math.max(0, el.clientHeight - m.height());
      setUnreadAbove(el.scrollTop > pad + m.offsets[fu] + 4);
    }
    if (!raf.current) raf.current = requestAnimationFrame(() => { raf.current = 0; computeRange(); });
  }, [computeRange]);

  // After each render: measure rows, keep the anchor row still (or the
  // bottom in view), then render again if anything moved.
  useLayoutEffect(() => {
    const el = scroller.current, rows = rowsRef.current;
    if (!el || !rows) return;
    m.layout();
    const pad0 = Math.max(0, el.clientHeight - m.height());
    const anchorTop = el.scrollTop - pad0;
    const anchor = Math.max(0, lowerBound(m.offsets, m.total, anchorTop + 1) - 1);
    const anchorDelta = anchorTop - m.offsets[anchor];
    let changed = false;
    for (const row of rows.children) {
      const i = +row.dataset.i;
      const h = row.offsetHeight;
      if (h && Math.abs(m.heights[i] - h) > 0.5) { m.heights[i] = h; changed = true; }
    }
    if (changed) m.dirty = true;
    m.layout();
    const pad = Math.max(0, el.clientHeight - m.height());
    const ps = pendingScroll.current;
    if (ps !== null) {
      if (ps === 'bottom') el.scrollTop = el.scrollHeight;
      else el.scrollTop = Math.max(0, pad + m.offsets[ps] - 48);
      if (!changed) pendingScroll.current = null;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    } else if (changed) {
      el.scrollTop = pad + m.offsets[anchor] + anchorDelta;
    }
    computeRange();
    if (changed) bump();
  });

  const scrollToPos = (pos) => { stick.current = false; pendingScroll.current = pos; bump(); };
  const jumpToLatest = () => { stick.current = true; pendingScroll.current = 'bottom'; bump(); };

  // A new message goes to the outbox, which sends it now or when the node
  // is back; an edit needs the node now.
  const send = async (text) => {
    setError(null);
    if (!editing) {
      const r = replyTo;
      setReplyTo(null);
      stick.current = true;
      await outbox.enqueue({ conv: id, text, replyTo: r ? r.id : '' });
      return true;
    }
    try {
      const msg = await put(`/conversations/${enc(id)}/messages/${editing.id}`, { text });
      m.put(msg);
      setEditing(null);
      bump();
      return true;
    } catch (e) {
      setError(e);
      refresh();
      return false;
    }
  };

  // Files: each is uploaded to the node, which sends it as a message.
  const [uploads, setUploads] = useState([]);
  const sendFiles = (files) => {
    const r = replyTo;
    setReplyTo(null);
    stick.current = true;
    for (const file of files) {
      const u = { id: crypto.randomUUID(), name: file.name, progress: 0 };
      const job = upload(id, file, { replyTo: r ? r.id : '', onProgress: (p) => setUploads((us) => us.map((x) => (x.id === u.id ? { ...x, progress: p } : x))) });
      u.abort = job.abort;
      setUploads((us) => [...us, u]);
      job.done.then(() => { setUploads((us) => us.filter((x) => x.id !== u.id)); refresh(); }, (e) => {
        if (e.code === 'cancelled') setUploads((us) => us.filter((x) => x.id !== u.id));
        else setUploads((us) => us.map((x) => (x.id === u.id ? { ...x, error: errorText(e) } : x)));
      });
    }
  };
  const cancelUpload = (u) => { u.abort?.(); setUploads((us) => us.filter((x) => x.id !== u.id)); };

  const act = async (fn) => { setError(null); try { await fn(); refresh(); } catch (e) { setError(e); } };
  const react = (msg, emoji) => {
    const mine = msg.reactions?.find((r) => r.emoji === emoji)?.accounts?.includes(account?.account);
    return act(() => post(`/conversations/${enc(id)}/reactions`, { message: msg.id, emoji, remove: !!mine }));
  };
  const remove = (msg) => { setActive(null); if (confirm(t('deleteConfirm'))) act(() => del(`/conversations/${enc(id)}/messages/${msg.id}`)); };
  const startEdit = (msg) => { setActive(null); setReplyTo(null); setEditing(msg); composerRef.current?.focus(); };
  // editLast: ArrowUp in an empty composer edits the user's newest
  // message (as in Element and Slack), if it is loaded and not deleted.
  const editLast = () => {
    if (readOnly) return false;
    for (let i = m.serverTotal - 1; i >= Math.max(0, m.serverTotal - PAGE); i--) {
      const x = m.msgs.get(i);
      if (x && x.mine && !x.deleted && !x.pending) { startEdit(x); return true; }
    }
    return false;
  };
  const startReply = (msg) => { setActive(null); setEditing(null); setReplyTo(msg); composerRef.current?.focus(); };
  const pickReaction = (msg, emoji) => { setActive(null); react(msg, emoji); };

  if (!conv && convs) return <div class="empty-pane"><BackLink /><p>{t('pickChat')}</p></div>;
  const title = conv ? displayTitle(conv, contacts, account) : '…';
  const others = (conv?.members || []).filter((x) => !x.self);
  const direct = conv ? isDirect(conv) : others.length === 1;
  const blocked = direct && !!conv?.blocked;
  let subtitle = !direct ? others.map((x) => nameOf(x.account, contacts, account, conv)).join(', ') : '';
  if (direct && others.length) subtitle = blocked ? t('blocked') : presenceText(presence[others[0].account]);
  const now = Date.now();
  const typers = Object.entries(typing[id] || {}).filter(([a, until]) => until > now && a !== account?.account);

  m.layout();
  const pad = Math.max(0, viewH - m.height());
  const otherName = others.length ? nameOf(others[0].account, contacts, account, conv) : '';
  const [s, e] = range;
  const rows = [];
  for (let i = s; i < e; i++) {
    const msg = m.msgs.get(i);
    const prev = i > 0 ? m.msgs.get(i - 1) : null;
    rows.push(
      <div class={'row' + (msg && active?.id === msg.id ? ' active' : '')} data-i={i} key={msg ? msg.id : 'p' + i} style={`transform:translateY(${pad + m.offsets[i]}px)`}>
        {msg ? (
          <MessageRow msg={msg} prev={prev} first={i === 0} unreadHere={i === firstUnread.current} group={others.length > 1} hideRead={!props.prefs.readReceipts}
            contacts={contacts} account={account} names={names} model={m} onReply={startReply} onEdit={startEdit} onDelete={remove}
            onReact={react} onPick={pickReaction} onQuote={scrollToPos} active={active?.id === msg.id ? active : null}
            onActivate={activate} onDeactivate={deactivate} onTogglePicker={togglePicker} readOnly={readOnly} conv={id} />
        ) : <div class="placeholder" aria-hidden="true">{t('loadingMessage')}</div>}
      </div>
    );
  }

  return (
    <section class="conversation" aria-label={title}>
      <header class="bar">
        <BackLink />
        <Avatar name={title} />
        <div class="bar-title">
          <h2>{title}</h2>
          {subtitle && <p class="muted small">{subtitle}</p>}
        </div>
        <button class="icon-btn" ref={detailsBtn} aria-label={t('details')} title={t('details')} aria-expanded={showDetails} onClick={() => setShowDetails(!showDetails)}><Icon name="info" /></button>
      </header>
      {showDetails && conv && <ConvDetails conv={conv} {...props} onClose={() => setShowDetails(false)} />}
      <div class="scroller" ref={scroller} onScroll={onScroll} role="log" aria-label={t('messages')} tabIndex={0}>
        <div class="rows" ref={rowsRef} style={`height:${pad + m.height()}px`}>{rows}</div>
      </div>
      {unreadAbove && <button class="jump-unread" onClick={() => { scrollToPos(firstUnread.current); setUnreadAbove(false); }}>{t('jumpToUnread')}</button>}
      {!atBottom && <button class="jump" onClick={jumpToLatest} aria-label={t('jumpToLatest')} title={t('jumpToLatest')}><Icon name="down" /></button>}
      <div class="typing muted small" aria-live="polite">{typers.length ? t('typing', { name: nameOf(typers[0][0], contacts, account, conv) }) : ''}</div>
      <ErrorLine error={error} />
      <Uploads items={uploads} onCancel={cancelUpload} />
      {blocked ? (
        <div class="blocked-notice">
          <p>{t('blockedNotice', { name: otherName })}</p>
          <button onClick={() => act(() => setBlocked(others[0].account, otherName, false, props.loadContacts, loadConvs))}>{t('unblockName', { name: otherName })}</button>
        </div>
      ) : (
        <Composer key={editing ? 'edit:' + editing.id : 'new'} inputRef={composerRef} convId={id} onSend={send} onEditLast={editLast} onFiles={sendFiles}
          replyTo={replyTo} editing={editing} onCancel={() => { setReplyTo(null); setEditing(null); }}
          replyName={replyTo ? (replyTo.mine ? t('you') : nameOf(replyTo.author, contacts, account, conv)) : ''} />
      )}
    </section>
  );
}

const statusIcon = { sending: '◷', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };
const statusLabel = { sending: 'statusSending', sent: 'statusSent', delivered: 'statusDelivered', read: 'statusRead', failed: 'statusFailed' };

// MessageRow re-renders only when what it shows changed: scrolling
// re-renders the list every frame, and most rows stay the same.
class MessageRow extends Component {
  shouldComponentUpdate(n) {
    const p = this.props;
    if (n.msg !== p.msg || n.active !== p.active || n.hideRead !== p.hideRead || n.readOnly !== p.readOnly || n.first !== p.first || n.unreadHere !== p.unreadHere || n.group !== p.group || n.contacts !== p.contacts || n.account !== p.account || n.names !== p.names) return true;
    if ((n.prev && n.prev.time) !== (p.prev && p.prev.time) || (n.prev && n.prev.author) !== (p.prev && p.prev.author)) return true;
    // A quoted message that arrived later changes the quote.
    return !!n.msg.replyTo && n.model.byId.get(n.msg.replyTo) !== this.quotePos;
  }
  render(props) {
    this.quotePos = props.msg.replyTo ? props.model.byId.get(props.msg.replyTo) : undefined;
    return <MessageView {...props} />;
  }
}

function MessageView({ msg, prev, first, unreadHere, group, hideRead, contacts, account, names, model, onReply, onEdit, onDelete, onReact, onPick, onQuote, active, onActivate, onDeactivate, onTogglePicker, readOnly, conv }) {
  // As in Signal: who sends no read receipts sees none.
  const status = hideRead && msg.status === 'read' ? 'delivered' : msg.status;
  const picker = !!active?.picker;
  const msgRef = useRef(null), barRef = useRef(null);
  useLayoutEffect(() => { if (active && barRef.current) placeBar(msgRef.current, barRef.current, msg.mine); }, [active, msg]);
  const day = new Date(msg.time).toDateString();
  const newDay = first || (prev && new Date(prev.time).toDateString() !== day);
  const author = msg.mine ? t('you') : nameOf(msg.author || '', contacts, account, names);
  const showAuthor = group && !msg.mine && (!prev || prev.author !== msg.author || newDay);
  let quote = null;
  if (msg.replyTo) {
    const qp = model.byId.get(msg.replyTo);
    const q = qp !== undefined ? model.msgs.get(qp) : null;
    quote = (
      <button class="quote" onClick={() => qp !== undefined && onQuote(qp)} title={t('showOriginal')}>
        <strong>{q ? (q.mine ? t('you') : nameOf(q.author, contacts, account, names)) : '…'}</strong>
        <span>{q ? (q.deleted ? t('deleted') : q.text || q.attachment?.name || '') : ''}</span>
      </button>
    );
  }
  const pending = !!msg.pending;
  return (
    <>
      {newDay && <div class="day" role="separator"><span>{dayLabel(msg.time)}</span></div>}
      {unreadHere && <div class="unread-divider" role="separator"><span>{t('unreadDivider')}</span></div>}
      <div class={'msg' + (msg.mine ? ' mine' : '') + (msg.deleted ? ' deleted' : '') + (active ? ' active' : '') + (pending ? ' pending' : '')} tabIndex={0} data-id={msg.id} data-client-id={msg.clientId} ref={msgRef}
        onMouseEnter={() => onActivate(msg.id, 'hover')} onMouseLeave={() => onDeactivate(msg.id, 'hover')} onClick={() => onActivate(msg.id, 'tap')}
        onfocusin={() => onActivate(msg.id, 'focus')} onfocusout={(e) => { if (!e.currentTarget.contains(e.relatedTarget)) onDeactivate(msg.id, 'focus'); }}>
        <div class="bubble">
          {showAuthor && <div class="author">{author}</div>}
          {quote}
          {!msg.deleted && msg.attachment && <Attachment conv={conv} msg={msg} />}
          {msg.deleted ? <p class="text muted"><em>{t('deleted')}</em></p> : (msg.text || !msg.attachment) && <p class={'text' + (emojiOnly(msg.text) ? ' emoji-only' : '')} dir="auto">{linkify(msg.text)}</p>}
          <div class="meta">
            {msg.edited && !msg.deleted && <span class="edited">{t('edited')}</span>}
            <time dateTime={msg.time}>{clock(msg.time)}</time>
            {msg.mine && status && (
              <span class={'status ' + status} role="img" aria-label={t(statusLabel[status])} title={t(statusLabel[status])} data-status={status}>
                {statusIcon[status]}
              </span>
            )}
          </div>
        </div>
        {status === 'failed' && (
          <div class="send-failed small">
            <span class="error" role="alert">{t('sendFailed', { reason: errorText(msg.error) })}</span>
            <button onClick={() => outbox.retry(msg.clientId)}>{t('retry')}</button>
            <button onClick={() => outbox.discard(msg.clientId)}>{t('discard')}</button>
          </div>
        )}
        {msg.reactions?.length > 0 && (
          <div class="reactions">
            {msg.reactions.map((r) => {
              const mine = r.accounts.includes(account?.account);
              return (
                <button key={r.emoji} class={'chip' + (mine ? ' mine' : '')} aria-pressed={mine}
                  aria-label={(mine ? t('removeReaction', { emoji: r.emoji }) : t('reactWith', { emoji: r.emoji })) + ' (' + r.accounts.length + ')'}
                  onClick={() => onReact(msg, r.emoji)}>
                  {r.emoji} {r.accounts.length > 1 ? r.accounts.length : ''}
                </button>
              );
            })}
          </div>
        )}
        {active && !msg.deleted && !pending && (
          <div class="actions" role="toolbar" aria-label={t('messageActions')} ref={barRef} onClick={(e) => e.stopPropagation()}>
            {!picker && <button class="icon-btn" aria-label={t('reply')} title={t('reply')} onClick={() => onReply(msg)}><Icon name="reply" /></button>}
            {!readOnly && <button class="icon-btn" aria-label={t('react')} title={t('react')} aria-expanded={picker} onClick={() => onTogglePicker(msg.id)}><Icon name="react" /></button>}
            {picker && (
              <div class="picker" role="group" aria-label={t('react')}>
                {QUICK.map((e) => <button key={e} aria-label={t('reactWith', { emoji: e })} onClick={() => onPick(msg, e)}>{e}</button>)}
              </div>
            )}
            {!picker && !readOnly && msg.mine && <button class="icon-btn" aria-label={t('edit')} title={t('edit')} onClick={() => onEdit(msg)}><Icon name="edit" /></button>}
            {!picker && !readOnly && msg.mine && <button class="icon-btn" aria-label={t('delete')} title={t('delete')} onClick={() => onDelete(msg)}><Icon name="trash" /></button>}
          </div>
        )}
      </div>
    </>
  );
}

// placeBar puts a message's action bar where it hides none of the bubble:
// beside it when the row has room (left of an own message, right of
// another's), else above it, or below it when the bubble is at the top
// of the visible list. Coordinates are relative to the message element.
function placeBar(el, bar, mine) {
  const bubble = el.querySelector('.bubble');
  if (!bubble) return;
  const m = el.getBoundingClientRect(), b = bubble.getBoundingClientRect();
  const view = (el.closest('.scroller') || document.documentElement).getBoundingClientRect();
  const w = bar.offsetWidth, h = bar.offsetHeight, gap = 6;
  // Own messages sit at the end of the line: the bar goes before them
  // (to the left, or to the right in a right-to-left language).
  const before = mine !== (getComputedStyle(el).direction === 'rtl');
  let left = before ? b.left - gap - w : b.right + gap;
  let top = b.top;
  if (left < m.left || left + w > m.right) {
    left = Math.max(m.left, Math.min(before ? b.right - w : b.left, m.right - w));
    top = b.top - gap - h;
    if (top < view.top) {
      const below = el.querySelector('.reactions') || bubble;
      top = below.getBoundingClientRect().bottom + gap;
    }
  }
  bar.style.left = `${left - m.left}px`;
  bar.style.top = `${top - m.top}px`;
}

function Composer({ convId, onSend, onEditLast, onFiles, replyTo, editing, onCancel, replyName, inputRef }) {
  // A new message starts from the conversation's draft; an edit from the
  // message (and leaves the draft alone).
  const [text, setText] = useState(() => (editing ? editing.text : drafts.get(convId)));
  const lastTyping = useRef(0);
  const grow = (el) => { el.style.height = 'auto'; el.style.height = Math.min(el.scrollHeight, 160) + 'px'; };
  useEffect(() => {
    if (!inputRef.current) return;
    if (editing) inputRef.current.focus();
    if (text) grow(inputRef.current);
  }, []);
  const submit = async () => {
    const v = text;
    if (!v.trim()) return;
    setText('');
    if (!editing) drafts.set(convId, '');
    if (inputRef.current) inputRef.current.style.height = 'auto';
    if (!(await onSend(v))) setText(v);
  };
  const onKey = (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    else if (e.key === 'Escape' && (replyTo || editing)) { e.preventDefault(); onCancel(); }
    else if (e.key === 'ArrowUp' && !text && !editing && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey && onEditLast()) e.preventDefault();
  };
  const onInput = (e) => {
    setText(e.currentTarget.value);
    if (!editing) drafts.set(convId, e.currentTarget.value);
    grow(e.currentTarget);
    const now = Date.now();
    if (!editing && now - lastTyping.current > 3000) {
      lastTyping.current = now;
      post(`/conversations/${enc(convId)}/typing`).catch(() => {});
    }
  };
  return (
    <form class="composer" onSubmit={(e) => { e.preventDefault(); submit(); }}
      onDragOver={(e) => { if (!editing && e.dataTransfer?.types?.includes('Files')) e.preventDefault(); }}
      onDrop={(e) => { if (!editing && e.dataTransfer?.files?.length) { e.preventDefault(); onFiles([...e.dataTransfer.files]); } }}>
      {(replyTo || editing) && (
        <div class="composer-context">
          <span><strong>{editing ? t('editing') : t('replyingTo', { name: replyName })}</strong> {!editing && <span class="muted">{replyTo.text}</span>}</span>
          <button type="button" class="icon-btn" aria-label={t('cancel')} onClick={onCancel}><Icon name="close" /></button>
        </div>
      )}
      <div class="composer-row">
        {!editing && (
          <label class="icon-btn attach" title={t('attachFile')}>
            <input type="file" multiple class="sr-only" aria-label={t('attachFile')}
              onChange={(e) => { const fs = [...e.currentTarget.files]; e.currentTarget.value = ''; if (fs.length) onFiles(fs); }} />
            <span aria-hidden="true">📎</span>
          </label>
        )}
        <textarea ref={inputRef} rows={1} dir="auto" aria-label={t('messageInput')} placeholder={t('messageInput')} value={text}
          onKeyDown={onKey} onInput={onInput} maxLength={16384}
          onPaste={(e) => { const fs = [...(e.clipboardData?.files || [])]; if (fs.length && !editing) { e.preventDefault(); onFiles(fs); } }} />
        <button type="submit" class="send" aria-label={editing ? t('save') : t('send')} disabled={!text.trim()}><Icon name="send" /></button>
      </div>
    </form>
  );
}
