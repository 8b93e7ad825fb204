// Node status page: shows what /api/v1/status reports. The full chat UI
// replaces this page; until then it proves the login, the cookie and the API.
const $ = (id) => document.getElementById(id);

async function refresh() {
  try {
    const res = await fetch('/api/v1/status', { credentials: 'same-origin' });
    if (res.status === 401) {
      $('state').textContent = 'Not logged in: open the login URL that `glitr run` printed.';
      return;
    }
    const s = await res.json();
    $('state').textContent = 'Your node is running.';
    $('peer').textContent = s.peerId;
    $('version').textContent = s.version;
    $('peers').textContent = String(s.connectedPeers.length);
    const list = $('addrs');
    list.replaceChildren(...s.addrs.map((a) => {
      const li = document.createElement('li');
      li.textContent = a;
      return li;
    }));
    $('status').hidden = false;
  } catch {
    $('state').textContent = 'Cannot reach your node. Is `glitr run` still running?';
  }
}

refresh();
setInterval(refresh, 5000);
