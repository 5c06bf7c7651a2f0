// The QR login page: rotates the QR code, follows the login's state and,
// when the login ends, goes to the service's redirect URI (or shows the
// result). Text is set with textContent only.
(function () {
  'use strict';

  var root = document.getElementById('login');
  if (!root) {
    return;
  }
  var msgs = JSON.parse(document.getElementById('msgs').textContent);
  var loginID = root.dataset.loginId;
  var rotateMs = Number(root.dataset.rotateMs) || 25000;
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
  var lastQR = performance.now();
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

  // rotate fetches a new QR code (each fetch mints a new token) and swaps
  // the image once it has loaded, so the code never blinks.
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
    lastQR = performance.now();
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
      // No live token (the tab slept, or the token ended early): a new one now.
      if (!st.qr_expires_at && performance.now() - lastQR > 3000) {
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
  timers.push(window.setInterval(rotate, rotateMs));
  timers.push(window.setInterval(poll, pollMs));
  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) {
      poll();
    }
  });
  tick();
  poll();
}());
