// tidegate status page: re-renders the page every few seconds and sends the
// drain and undrain requests. Plain JavaScript, nothing loaded from
// elsewhere. The admin token the operator types stays in this tab's
// sessionStorage and goes only into the Authorization header of POSTs to
// this admin listener.
(function () {
  'use strict';

  var TOKEN_KEY = 'tidegate-admin-token';
  var refreshMs = (parseInt(document.body.getAttribute('data-refresh'), 10) || 2) * 1000;
  var timer = null;
  var refreshFailed = false; // the message shows a refresh error

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (e) {
      return '';
    }
  }

  function writeToken(value) {
    try {
      if (value) {
        sessionStorage.setItem(TOKEN_KEY, value);
      } else {
        sessionStorage.removeItem(TOKEN_KEY);
      }
    } catch (e) {
      say('This browser does not allow sessionStorage, so the token cannot be kept.', true);
    }
  }

  function say(text, isError) {
    refreshFailed = false;
    var el = document.getElementById('message');
    if (!el) {
      return;
    }
    el.textContent = text;
    el.className = isError ? 'error' : '';
  }

  function schedule(delay) {
    if (timer !== null) {
      clearTimeout(timer);
    }
    timer = setTimeout(refresh, delay);
  }

  // refresh fetches the server-rendered page again and swaps in its main
  // element, so the page and the no-JavaScript view render the same way.
  function refresh() {
    timer = null;
    fetch(location.pathname, { cache: 'no-store', credentials: 'same-origin' })
      .then(function (resp) {
        if (!resp.ok) {
          throw new Error('HTTP ' + resp.status);
        }
        return resp.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, 'text/html').getElementById('content');
        var current = document.getElementById('content');
        if (next && current) {
          current.replaceWith(document.importNode(next, true));
        }
        document.body.classList.remove('stale');
        if (refreshFailed) {
          say('', false);
        }
      })
      .catch(function (err) {
        document.body.classList.add('stale');
        say('Refresh failed (' + err.message + '): the figures below are from the last successful refresh.', true);
        refreshFailed = true;
      })
      .then(function () {
        schedule(refreshMs);
      });
  }

  // change describes the admin request behind an action button: the L4's
  // weight endpoint or the L7's drain endpoint.
  function change(button) {
    if (button.getAttribute('data-action') === 'weight') {
      var vip = button.getAttribute('data-vip');
      var real = button.getAttribute('data-real');
      var weight = parseInt(button.getAttribute('data-weight'), 10);
      return {
        url: '/vips/' + encodeURIComponent(vip) + '/reals/' + encodeURIComponent(real) + '/weight',
        body: { weight: weight },
        done: 'Weight of ' + real + ' on ' + vip + ' set to ' + weight + (weight === 0 ? ' (draining).' : '.')
      };
    }
    var upstream = button.getAttribute('data-upstream');
    var backend = button.getAttribute('data-backend');
    var drain = button.getAttribute('data-drain') === 'true';
    return {
      url: '/upstreams/' + encodeURIComponent(upstream) + '/backends/' + encodeURIComponent(backend) + '/drain',
      body: { drain: drain },
      done: 'Backend ' + backend + ' of ' + upstream + (drain ? ' is draining.' : ' is back in rotation.')
    };
  }

  function send(button) {
    var req = change(button);
    var headers = { 'Content-Type': 'application/json' };
    var token = readToken();
    if (token) {
      headers.Authorization = 'Bearer ' + token;
    }
    button.disabled = true;
    fetch(req.url, {
      method: 'POST',
      headers: headers,
      body: JSON.stringify(req.body),
      credentials: 'same-origin',
      cache: 'no-store'
    })
      .then(function (resp) {
        return resp.text().then(function (body) {
          if (resp.status === 401) {
            showTokenForm();
            throw new Error('the admin token is missing or wrong; enter it above');
          }
          if (!resp.ok) {
            throw new Error(body.trim() || 'HTTP ' + resp.status);
          }
          say(req.done, false);
        });
      })
      .catch(function (err) {
        say('Change failed: ' + err.message, true);
      })
      .then(function () {
        button.disabled = false;
        schedule(0);
      });
  }

  function showTokenForm() {
    var form = document.getElementById('token-form');
    if (form) {
      form.hidden = false;
      document.getElementById('token').focus();
    }
  }

  document.addEventListener('click', function (ev) {
    var target = ev.target;
    var button = target && target.closest ? target.closest('button[data-action]') : null;
    if (button && !button.disabled) {
      send(button);
    }
  });

  var form = document.getElementById('token-form');
  if (form) {
    form.hidden = false;
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var input = document.getElementById('token');
      writeToken(input.value);
      input.value = '';
      say(readToken() ? 'Token kept for this tab.' : 'Token cleared.', false);
    });
    document.getElementById('token-clear').addEventListener('click', function () {
      writeToken('');
      say('Token cleared.', false);
    });
  }

  schedule(refreshMs);
})();
