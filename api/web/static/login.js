// The QR login page: follows the login's state, shows the server's current
// QR code and, when the login ends, goes to the service's redirect URI (or
// shows the result). Text is set with textContent only.
//
// The server rotates the QR token on its own schedule (a new one every 25 s,
// each valid 30 s); /state's qr_expires_at is the current token's end. When
// it changes, the token changed: the page fetches qr.png again. No clock of
// the browser is involved.
(function () {
  'use strict';

  var root = document.getElementById('login');
  if (!root) {
    return;
  }
  var msgs = JSON.parse(document.getElementById('msgs').textContent);
  var loginID = root.dataset.loginId;
  var pollMs = 1500;
  var total = Number(root.dataset.expiresInMs) || 0;
  var deadline = performance.now() + total;
  var redirectURI = root.dataset.redirectUri || '';
  var base = '/login/' + encodeURIComponent(loginID);

  var qrBox = document.getElementById('qr-box');
  var statusEl = document.getElementById('status');
  var remainingEl = document.getElementById('remaining');
  var progress = document.getElementById('progress');
  var countdown = document.getElementById('countdown');

  var status = root.dataset.status;
  var ended = false;
  var polling = false;
  var offline = false;
  var qrExpiresAt = root.dataset.qrExpiresAt || '';
  var counter = 0;
  var timers = [];

  function minSec(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000));
    var r = s % 60;
    return Math.floor(s / 60) + ':' + (r < 10 ? '0' : '') + r;
  }

  function tick() {
    var left = deadline - performance.now();
    remainingEl.textContent = minSec(left);
    progress.value = Math.max(0, left);
    if (left <= 0) {
      poll();
    }
  }

  // rotate fetches the current QR code and swaps the image once it has
  // loaded, so the code never blinks.
  function rotate() {
    if (ended || status !== 'pending') {
      return;
    }
    var old = document.getElementById('qr');
    var next = document.createElement('img');
    next.id = old.id;
    next.className = old.className;
    next.width = old.width;
    next.height = old.height;
    next.alt = old.alt;
    next.addEventListener('load', function () {
      if (!ended && status === 'pending') {
        document.getElementById('qr').replaceWith(next);
      }
    });
    next.addEventListener('error', poll);
    counter += 1;
    next.src = base + '/qr.png?n=' + counter + '-' + Date.now();
  }

  function setStatusText(text) {
    if (statusEl.textContent !== text) {
      statusEl.textContent = text;
    }
  }

  function finish(st) {
    ended = true;
    timers.forEach(clearInterval);
    qrBox.hidden = true;
    countdown.hidden = true;
    root.dataset.status = st;
    root.classList.add('ended', 'ended-' + st);
    var heading = document.getElementById('client');
    setStatusText(msgs['Result_' + st] + '. ' + msgs['ResultText_' + st]);
    if (redirectURI) {
      var u;
      try {
        u = new URL(redirectURI);
      } catch (e) {
        return;
      }
      u.searchParams.set('login_id', loginID);
      u.searchParams.set('status', st);
      setStatusText(msgs['Result_' + st] + '. ' + msgs.LoginRedirecting);
      window.setTimeout(function () {
        window.location.replace(u.href);
      }, 600);
    } else if (heading) {
      heading.focus();
    }
  }

  function apply(st) {
    if (ended) {
      return;
    }
    status = st.status;
    root.dataset.status = status;
    if (status === 'pending') {
      qrBox.hidden = false;
      setStatusText(msgs.LoginPending);
      // The server's current token changed (or the tab slept): show the new one.
      if (st.qr_expires_at && st.qr_expires_at !== qrExpiresAt) {
        qrExpiresAt = st.qr_expires_at;
        rotate();
      }
    } else if (status === 'claimed') {
      qrBox.hidden = true;
      setStatusText(msgs.LoginClaimed);
    } else {
      finish(status);
    }
  }

  function poll() {
    if (ended || polling) {
      return;
    }
    polling = true;
    fetch(base + '/state', {cache: 'no-store', headers: {'Accept': 'application/json'}})
      .then(function (res) {
        if (res.status === 404) {
          return {status: 'expired'}; // forgotten: it ended long ago
        }
        if (!res.ok) {
          throw new Error('HTTP ' + res.status);
        }
        return res.json();
      })
      .then(function (st) {
        offline = false;
        root.classList.remove('offline');
        apply(st);
      })
      .catch(function () {
        if (!offline) {
          offline = true;
          root.classList.add('offline');
          setStatusText(msgs.LoginOffline);
        }
      })
      .then(function () {
        polling = false;
      });
  }

  document.documentElement.classList.add('js');
  document.getElementById('client').tabIndex = -1;
  timers.push(window.setInterval(tick, 500));
  timers.push(window.setInterval(poll, pollMs));
  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) {
      poll();
    }
  });
  tick();
  poll();
}());
