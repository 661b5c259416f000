import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { startGateway } from './helpers/gateway';
import { CLIENT_ID, CLIENT_SECRET, startOidcProvider } from './helpers/oidc';
import { freePort } from './helpers/redis';
import { startUpstream } from './helpers/upstream';

// A real browser starts slowly on a busy machine: more than the default per-file timeout.
t.setTimeout(240000);

const CHROMIUM = '/usr/bin/chromium';

/** Launching needs the binary and a working sandbox-less start; anything else skips this test with the reason. */
async function launch(): Promise<{ browser: import('playwright-core').Browser } | { skip: string }> {
  if (!existsSync(CHROMIUM)) return { skip: `${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)` };
  const { chromium } = await import('playwright-core');
  try {
    return { browser: await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 60000 }) };
  } catch (err) {
    return { skip: `chromium cannot start here: ${(err as Error).message.split('\n')[0]}` };
  }
}

t.test('a real browser logs in through the gateway; the upstream sees the identity headers', async (t) => {
  const launched = await launch();
  if ('skip' in launched) {
    // A plan of zero with a reason is tap's way of skipping from inside the test.
    t.plan(0, launched.skip);
    return;
  }
  const { browser } = launched;
  t.teardown(() => browser.close());

  const port = await freePort();
  const redirectUri = `http://127.0.0.1:${port}/oidc/callback`;
  const provider = await startOidcProvider({ redirectUris: [redirectUri], accounts: { carol: { roles: ['editor'], email: 'carol@example.test' } } });
  const upstream = await startUpstream();
  t.teardown(() => Promise.all([provider.close(), upstream.close()]));
  const gw = await startGateway({
    listen: { port },
    upstreams: { up: { targets: [upstream.url] } },
    auth: {
      oidc: {
        issuer: provider.issuer,
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUri,
        scopes: ['openid', 'email', 'roles'],
        claimHeaders: { 'X-User-Email': 'email' },
        // Plain HTTP in the test: a Secure cookie would never be sent back.
        session: { keys: [randomBytes(32).toString('base64')], secure: false },
      },
    },
    routes: [{ name: 'app', match: { prefix: '/' }, upstream: 'up', auth: { methods: ['oidc'] } }],
  });
  t.teardown(() => gw.close());

  const page = await browser.newPage();
  await page.goto(`${gw.url}/app/home?tab=1`, { timeout: 30000 });
  t.equal(new URL(page.url()).origin, provider.issuer, 'the browser is at the provider to log in');
  await page.fill('input[name="login"]', 'carol');
  await page.fill('input[name="password"]', 'secret');
  await Promise.all([page.waitForURL(/\/interaction\//, { timeout: 30000 }), page.click('button[type="submit"]')]);
  // The consent page: one more submit, then redirects back through the gateway's callback.
  await Promise.all([page.waitForURL(`${gw.url}/app/home?tab=1`, { timeout: 30000 }), page.click('button[type="submit"]')]);
  const echoed = JSON.parse((await page.textContent('body')) ?? '{}') as { url: string; headers: Record<string, string> };
  t.equal(echoed.url, '/app/home?tab=1', 'the browser lands where it was going');
  t.equal(echoed.headers['x-consumer-id'], 'carol');
  t.equal(echoed.headers['x-user-roles'], 'editor');
  t.equal(echoed.headers['x-user-email'], 'carol@example.test');
  t.notMatch(echoed.headers.cookie ?? '', /gateway_session/, 'the session cookie stays at the gateway');

  const cookies = await page.context().cookies(gw.url);
  const session = cookies.find((c) => c.name === 'gateway_session');
  t.ok(session, 'the browser keeps the session cookie');
  t.equal(session?.httpOnly, true);
  t.equal(session?.sameSite, 'Lax');

  // Reload: the session holds, no new login.
  await page.reload();
  t.equal(page.url(), `${gw.url}/app/home?tab=1`);
  t.equal(upstream.seen.at(-1)!.headers['x-consumer-id'], 'carol');
});
