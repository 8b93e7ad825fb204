import { render } from 'preact';
import { useState, useEffect, useRef, useCallback, useMemo } from 'preact/hooks';
import { registerSW } from 'virtual:pwa-register';
import { api, get, post, EventStream } from './api.js';
import { t, setLanguage, language } from './i18n.js';
import { Conversation } from './conversation.jsx';
import { Onboarding, Unlock, Settings, Invite, Contacts, NewChat } from './screens.jsx';
import { Revoked } from './devices.jsx';
import * as outbox from './outbox.js';
import * as cache from './cache.js';
import * as drafts from './drafts.js';
import { Avatar, Icon, go, shortTime, displayTitle, nameOf, isOnline, ONLINE_MS } from './ui.jsx';
import './style.css';

registerSW({ immediate: true });

// Start the first requests before anything renders: a reload shows the
// conversation list after one round trip, not after the chain account →
// stream → list.
const quiet = (p) => { p.catch(() => {}); return p; };
let prefetched = {
  account: quiet(get('/account')),
  convs: quiet(get('/conversations')),
  contacts: quiet(get('/contacts')),
  prefs: quiet(get('/preferences')),
};
function first(key, path) {
  const p = prefetched[key];
  prefetched[key] = null;
  return p || get(path);
}

const defaultPrefs = { theme: 'system', language: '', notifications: false, showPresence: true, readReceipts: true };

function parseRoute() {
  const h = location.hash.replace(/^#\/?/, '');
  const [page, ...rest] = h.split('/');
  return { page: page || 'chats', arg: rest.join('/') };
}

function applyTheme(theme) {
  const el = document.documentElement;
  if (theme === 'light' || theme === 'dark') el.dataset.theme = theme;
  else delete el.dataset.theme;
}

function App() {
  const [boot, setBoot] = useState('loading');
  const [bootError, setBootError] = useState('');
  const [account, setAccount] = useState(null);
  const [prefs, setPrefs] = useState(defaultPrefs);
  const [contacts, setContacts] = useState([]);
  const [convs, setConvs] = useState(null);
  const [presence, setPresence] = useState({});
  const [typing, setTyping] = useState({});
  const [conn, setConn] = useState('connecting');
  const [route, setRoute] = useState(parseRoute);
  const [query, setQuery] = useState('');
  const [, setLang] = useState(language);
  // fromCache: the app came up from the offline cache, the node being
  // away; the banner says so, and the node's first answer ends it.
  const [fromCache, setFromCache] = useState(false);
  const fromCacheRef = useRef(false);
  fromCacheRef.current = fromCache;
  const searchRef = useRef(null);
  const convListeners = useRef(new Set());
  const prevUnread = useRef({});
  const prefsRef = useRef(prefs);
  prefsRef.current = prefs;

  useEffect(() => {
    const on = () => setRoute(parseRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);

  const bootRef = useRef(boot);
  bootRef.current = boot;
  const loadAccount = useCallback(async () => {
    try {
      const a = await first('account', '/account');
      cache.allow(a);
      drafts.configure(a);
      if (a.state === 'new' || a.state === 'revoked') drafts.clearAll();
      setFromCache(false);
      setAccount(a);
      setBoot(a.state === 'new' || a.state === 'locked' || a.state === 'revoked' ? a.state : 'ready');
    } catch (e) {
      // A running app keeps its screen while the node is unreachable (the
      // banner says so); only a lock takes it to the unlock screen.
      if (bootRef.current === 'ready' && e.status !== 423 && e.status !== 401) return;
      if (e.status === 0) {
        // The node is away: show what the cache has, read-only, and let
        // the event stream find the node again.
        const ca = await cache.cachedAccount();
        if (ca && bootRef.current !== 'ready') {
          drafts.configure(ca);
          setAccount(ca);
          setFromCache(true);
          setBoot('ready');
          return;
        }
      }
      if (e.status === 401) { cache.clear(); drafts.clearAll(); }
      if (e.status === 401) setBoot('unauth');
      else if (e.status === 423) setBoot('locked');
      else if (e.status === 0) { setBootError(t('unreachable')); setBoot('offline'); }
      else {
        // A node whose account API is not available still chats.
        setAccount({ state: 'ready', name: '' });
        setBoot('ready');
      }
    }
  }, []);
  useEffect(() => { loadAccount(); }, []);
  // Unreachable at start: keep trying, so the app comes up with the node.
  useEffect(() => {
    if (boot !== 'offline') return;
    const iv = setInterval(loadAccount, 3000);
    return () => clearInterval(iv);
  }, [boot]);

  const loadConvs = useCallback(async () => {
    const cs = await first('convs', '/conversations');
    cache.write('convs', cs);
    // Notify about messages that arrived while the tab is hidden (unread
    // counts only others' messages; a muted chat stays silent). The text
    // stays out of it: the system shows notifications to whoever is at
    // the screen, and keeps them.
    if (document.hidden && prefsRef.current.notifications && 'Notification' in window && Notification.permission === 'granted') {
      for (const c of cs) {
        const before = prevUnread.current[c.id] ?? 0;
        if (c.unread > before && !c.muted && !c.lastMessage?.mine) {
          const n = new Notification(displayTitle(c, contactsRef.current, account), { body: t('newMessage'), tag: c.id });
          n.onclick = () => { focus(); go('c/' + c.id); n.close?.(); };
        }
      }
    }
    prevUnread.current = Object.fromEntries(cs.map((c) => [c.id, c.unread]));
    outbox.seen(cs.map((c) => c.lastMessage?.clientId).filter(Boolean));
    setConvs(cs);
    // A message from a typist ends its "typing…" (the signal said "until
    // 6 s after it arrived"; a newer message from the same account wins).
    setTyping((tp) => {
      let out = tp;
      for (const c of cs) {
        const lm = c.lastMessage, who = tp[c.id];
        if (!lm || lm.mine || !who || !(lm.author in who)) continue;
        if (new Date(lm.time).getTime() > who[lm.author] - 6000 - 2000) {
          out = { ...out, [c.id]: { ...who } };
          delete out[c.id][lm.author];
        }
      }
      return out;
    });
  }, [account]);
  const contactsRef = useRef(contacts);
  contactsRef.current = contacts;
  const loadContacts = useCallback(async () => {
    const cs = await first('contacts', '/contacts');
    cache.write('contacts', cs);
    setContacts(cs);
  }, []);

  const refreshTimer = useRef(null);
  // At most one list refetch per 100 ms, however many events arrive.
  const scheduleRefresh = useCallback(() => {
    if (refreshTimer.current) return;
    refreshTimer.current = setTimeout(() => { refreshTimer.current = null; loadConvs().catch(() => {}); }, 100);
  }, [loadConvs]);

  // Once ready: fetch state, send what the outbox holds, open the event
  // stream (every (re)connection sends the outbox again).
  useEffect(() => {
    if (boot !== 'ready') return;
    outbox.start(account?.account || '');
    // Without the node, what the cache holds (only until the node answers).
    const cached = (key, set) => (e) => { if (e.status === 0) cache.read(key).then((v) => v && set(v)); };
    first('prefs', '/preferences').then((p) => { cache.write('prefs', p); setPrefs({ ...defaultPrefs, ...p }); })
      .catch(cached('prefs', (p) => setPrefs((x) => (x === defaultPrefs ? { ...defaultPrefs, ...p } : x))));
    loadConvs().catch(cached('convs', (cs) => setConvs((c) => c || cs)));
    // The node's answer says who is online now; their last heartbeat
    // (lastSeen) starts the time "online" lasts without another.
    get('/presence').then((all) => {
      const now = Date.now();
      setPresence(Object.fromEntries(Object.entries(all || {}).map(([k, p]) => [k, { ...p, at: p.lastSeen ? Math.min(now, Date.parse(p.lastSeen)) : now }])));
    }).catch(() => {});
    const stream = new EventStream((f) => {
      switch (f.kind) {
        case 'resync': case 'resumed': case 'gap':
          // The node may have restarted locked; and an app that came up
          // from the cache learns the account's state now.
          if (f.kind !== 'resync' || fromCacheRef.current) loadAccount();
          outbox.flush();
          loadConvs().catch(() => {});
          loadContacts().catch(() => {});
          for (const l of convListeners.current) l(f);
          break;
        case 'typing':
          setTyping((tp) => ({ ...tp, [f.conversation]: { ...(tp[f.conversation] || {}), [f.account]: Date.now() + 6000 } }));
          setTimeout(() => setTyping((tp) => ({ ...tp })), 6100);
          break;
        case 'presence':
          setPresence((p) => ({ ...p, [f.account]: { online: !!f.online, lastSeen: f.lastSeen || p[f.account]?.lastSeen, at: Date.now() } }));
          break;
        case 'account': case 'devices':
          // This device may have been removed by another one.
          if (f.kind === 'account') loadAccount();
          for (const l of convListeners.current) l(f);
          break;
        default:
          scheduleRefresh();
          if (f.kind === 'contact') loadContacts().catch(() => {});
          for (const l of convListeners.current) l(f);
      }
    }, (st) => {
      setConn(st);
      // A node that restarted with a passphrase refuses the stream (423)
      // until it is unlocked: find out, and show the unlock screen.
      if (st === 'offline') loadAccount();
    });
    stream.start();
    loadContacts().catch(cached('contacts', (cs) => setContacts((c) => (c.length ? c : cs))));
    return () => { stream.closed = true; stream.ws && stream.ws.close(); };
  }, [boot]);

  useEffect(() => { applyTheme(prefs.theme); }, [prefs.theme]);
  useEffect(() => {
    let live = true;
    setLanguage(prefs.language).then((l) => live && setLang(l));
    return () => { live = false; };
  }, [prefs.language]);

  // The unread count in the tab's title and on the installed app's icon
  // (Badging API): the chats that are not muted, except the open one
  // while it is on screen (what arrives there is read at once).
  const openNow = route.page === 'c' ? route.arg : null;
  useEffect(() => {
    const visible = document.visibilityState === 'visible';
    const n = (convs || []).reduce((s, c) => s + (c.muted || (c.id === openNow && visible) ? 0 : c.unread || 0), 0);
    document.title = n ? `(${n}) ${t('appName')}` : t('appName');
    if (navigator.setAppBadge) (n ? navigator.setAppBadge(n) : navigator.clearAppBadge()).catch(() => {});
  }, [convs, openNow]);

  // Ctrl+K (⌘K) goes to the search field, from anywhere.
  useEffect(() => {
    const on = (e) => {
      if (!(e.ctrlKey || e.metaKey) || e.altKey || e.shiftKey || e.key.toLowerCase() !== 'k') return;
      e.preventDefault();
      // At phone width the list is hidden behind an open pane.
      if (parseRoute().page !== 'chats' && matchMedia('(max-width: 720px)').matches) go('');
      setTimeout(() => { searchRef.current?.focus(); searchRef.current?.select(); }, 0);
    };
    addEventListener('keydown', on);
    return () => removeEventListener('keydown', on);
  }, []);

  // "Online" lapses by itself when no heartbeat came for ONLINE_MS: render
  // again when the next one does.
  useEffect(() => {
    const now = Date.now();
    const left = Object.values(presence).filter((p) => isOnline(p, now)).map((p) => p.at + ONLINE_MS - now);
    if (!left.length) return;
    const tm = setTimeout(() => setPresence((p) => ({ ...p })), Math.min(...left) + 50);
    return () => clearTimeout(tm);
  }, [presence]);

  const onConvEvent = useCallback((fn) => {
    convListeners.current.add(fn);
    return () => convListeners.current.delete(fn);
  }, []);

  if (boot === 'loading') return <main class="center"><h1 class="sr-only">{t('appName')}</h1><p role="status">{t('loading')}</p></main>;
  if (boot === 'unauth') return <main class="center"><h1 class="sr-only">{t('appName')}</h1><p>{t('loginNeeded')}</p></main>;
  if (boot === 'offline') return <main class="center"><h1 class="sr-only">{t('appName')}</h1><p role="alert">{bootError}</p><button onClick={() => { setBoot('loading'); loadAccount(); }}>{t('retry')}</button></main>;
  if (boot === 'new') return <Onboarding onDone={loadAccount} />;
  if (boot === 'locked') return <Unlock onDone={loadAccount} />;
  if (boot === 'revoked') return <Revoked />;

  const readOnly = conn !== 'online';
  const ctx = { account, prefs, setPrefs, contacts, loadContacts, convs, loadConvs, presence, typing, onConvEvent, setAccount, reloadAccount: loadAccount, readOnly };
  const openId = route.page === 'c' ? route.arg : null;
  const side = route.page === 'chats' || route.page === 'c';
  const detail = route.page !== 'chats';

  let main;
  switch (route.page) {
    case 'c': main = <Conversation key={openId} id={openId} {...ctx} />; break;
    case 'settings': main = <Settings {...ctx} />; break;
    case 'invite': main = <Invite {...ctx} />; break;
    case 'contacts': main = <Contacts {...ctx} />; break;
    case 'new': main = <NewChat {...ctx} group={route.arg === 'group'} />; break;
    default: main = <EmptyPane hasChats={!!convs?.length} />;
  }

  // One main landmark holds the whole app (at phone width the list and the
  // pane take turns, and either must be inside it); its h1 names the app,
  // the list and the pane have h2 titles.
  return (
    <main class={'app' + (detail ? ' show-detail' : '')}>
      <h1 class="sr-only">{t('appName')}</h1>
      {conn !== 'online' && (
        <div class={'banner ' + conn} role="status" aria-live="polite">
          {fromCache ? t('offlineCached') : conn === 'offline' || conn === 'unauthorized' ? t('offline') : t('connecting')}
        </div>
      )}
      <nav class="sidebar" aria-label={t('chats')}>
        <header class="bar">
          <Avatar name={account?.name || '?'} src={account?.avatar} />
          <h2 class="bar-heading">{t('chats')}</h2>
          <a class="icon-btn" href="#/new" aria-label={t('newChat')} title={t('newChat')}><Icon name="compose" /></a>
          <a class="icon-btn" href="#/invite" aria-label={t('invite')} title={t('invite')}><Icon name="invite" /></a>
          <a class="icon-btn" href="#/contacts" aria-label={t('contacts')} title={t('contacts')}><Icon name="contacts" /></a>
          <a class="icon-btn" href="#/settings" aria-label={t('settings')} title={t('settings')}><Icon name="settings" /></a>
        </header>
        <div class="search">
          <input type="search" ref={searchRef} aria-label={t('search')} placeholder={t('search')} value={query} aria-keyshortcuts="Control+K"
            onInput={(e) => setQuery(e.currentTarget.value)}
            onKeyDown={(e) => { if (e.key === 'Escape') { e.preventDefault(); setQuery(''); e.currentTarget.blur(); } }} />
        </div>
        <ConvList convs={convs} query={query} openId={openId} contacts={contacts} account={account} typing={typing} />
      </nav>
      <div class="detail">{main}</div>
    </main>
  );
}

// EmptyPane is the start screen's right-hand side: a way on for someone
// with no chat yet, a hint otherwise.
function EmptyPane({ hasChats }) {
  return (
    <section class="empty-pane" aria-labelledby="h-empty">
      <div class="stack empty-start">
        <h2 id="h-empty">{hasChats ? t('pickChatTitle') : t('startTitle')}</h2>
        <p>{hasChats ? t('pickChat') : t('startText')}</p>
        <a class="button primary" href="#/invite">{t('inviteSomeone')}</a>
      </div>
    </section>
  );
}

let listMarked = false;

function ConvList({ convs, query, openId, contacts, account, typing }) {
  const items = useMemo(() => {
    if (!convs) return null;
    const q = query.trim().toLowerCase();
    return convs
      .map((c) => ({ c, title: displayTitle(c, contacts, account) }))
      .filter(({ c, title }) => !q || title.toLowerCase().includes(q) || (c.lastMessage?.text || '').toLowerCase().includes(q));
  }, [convs, query, contacts, account]);
  useEffect(() => {
    if (items && !listMarked) { listMarked = true; performance.mark('glitr-list-rendered'); }
  }, [items]);
  if (!items) return <p class="muted pad" role="status">{t('loading')}</p>;
  if (!items.length) {
    if (convs.length) return <p class="muted pad">{t('noMatches')}</p>;
    // At phone width the list is the whole start screen: the way on is here.
    return (
      <div class="pad stack">
        <p class="muted">{t('noChats')}</p>
        <a class="button primary narrow-only" href="#/invite">{t('inviteSomeone')}</a>
      </div>
    );
  }
  const now = Date.now();
  // The open chat, when visible, is being read: what arrives there is
  // marked read at once, and a badge would only flash until then.
  const visible = document.visibilityState === 'visible';
  return (
    <ul class="conv-list" role="list">
      {items.map(({ c, title }) => {
        const lm = c.lastMessage;
        const typers = Object.entries(typing[c.id] || {}).filter(([, until]) => until > now);
        let preview = lm ? (lm.deleted ? t('deleted') : (lm.mine ? t('you') + ': ' : '') + lm.text) : '';
        // The open chat's draft is in its composer; the others show theirs.
        const draft = c.id !== openId ? drafts.get(c.id) : '';
        if (draft) preview = t('draft') + ': ' + draft;
        if (typers.length) preview = t('typing', { name: nameOf(typers[0][0], contacts, account, c) });
        return (
          <li key={c.id}>
            <a href={'#/c/' + c.id} class={'conv-item' + (c.id === openId ? ' active' : '')} aria-current={c.id === openId ? 'page' : undefined}>
              <Avatar name={title} />
              <span class="conv-main">
                <span class="conv-top">
                  <span class="conv-title">{title}</span>
                  {c.muted && <span class="conv-muted" role="img" aria-label={t('mutedChat')} title={t('mutedChat')}><Icon name="muted" /></span>}
                  {lm && <time class="muted small">{shortTime(lm.time)}</time>}
                </span>
                <span class="conv-bottom">
                  <span class={'conv-preview' + (draft && !typers.length ? ' has-draft' : '')} dir="auto">{preview}</span>
                  {c.unread > 0 && !(c.id === openId && visible) && <span class="badge" aria-label={t('unreadCount', { n: c.unread })}>{c.unread}</span>}
                </span>
              </span>
            </a>
          </li>
        );
      })}
    </ul>
  );
}

// The first render waits for the language's strings (a chunk from the
// service worker's cache, or one request), so nothing flashes in English.
const root = document.getElementById('app');
setLanguage('').finally(() => {
  root.textContent = '';
  render(<App />, root);
});
