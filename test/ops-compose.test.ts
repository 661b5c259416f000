import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { loadConfigFile } from '../src/config/load';

// docker compose cannot run here, so each of its parts is checked with the tool that reads it.
const ROOT = join(__dirname, '..');
const COMPOSE_DIR = join(ROOT, 'deploy', 'compose');
const COMPOSE_FILE = join(COMPOSE_DIR, 'compose.yaml');
const compose = YAML.parse(readFileSync(COMPOSE_FILE, 'utf8')) as { services: Record<string, any> };
const services = compose.services;

/** `host:container[:mode]` volume entries of a service, with the host side resolved like compose does. */
function mounts(name: string): { host: string; container: string }[] {
  return (services[name].volumes ?? []).map((v: string) => {
    const [host, container] = v.split(':');
    return { host: resolve(COMPOSE_DIR, host), container };
  });
}
const mountOf = (name: string, container: string) => mounts(name).find((m) => m.container === container)?.host;

const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' }).status === 0;

t.test('the compose file parses and has the gateway, Redis, two services, Prometheus and Grafana', async (t) => {
  const doc = YAML.parseDocument(readFileSync(COMPOSE_FILE, 'utf8'));
  t.same(doc.errors, [], 'valid YAML');
  t.same(Object.keys(services).sort(), ['gateway', 'grafana', 'orders', 'prometheus', 'redis', 'users']);
  for (const [name, s] of Object.entries(services)) {
    t.ok(s.image || s.build, `${name} has an image or a build`);
    for (const dep of Object.keys(Array.isArray(s.depends_on) ? Object.fromEntries(s.depends_on.map((d: string) => [d, {}])) : (s.depends_on ?? {}))) {
      t.ok(dep in services, `${name} depends on ${dep}, a service of the file`);
    }
  }
  for (const name of Object.keys(services)) for (const m of mounts(name)) t.ok(existsSync(m.host), `${name}: ${m.host} exists`);
  const build = services.gateway.build;
  t.ok(existsSync(join(resolve(COMPOSE_DIR, build.context), build.dockerfile)), 'the gateway is built from the repository Dockerfile');
  t.match(services.redis.healthcheck.test.join(' '), /redis-cli ping/);
  t.equal(services.gateway.depends_on.redis.condition, 'service_healthy');
});

t.test('the gateway config of the compose file is valid and names the compose services', async (t) => {
  const file = mountOf('gateway', '/etc/gateway/gateway.yaml')!;
  t.equal(file, join(COMPOSE_DIR, 'gateway.yaml'));
  const cfg = loadConfigFile(file, { ADMIN_TOKEN: services.gateway.environment.ADMIN_TOKEN.replace(/^\$\{ADMIN_TOKEN:-(.*)\}$/, '$1') });
  t.equal(cfg.listen.host, '0.0.0.0');
  t.equal(cfg.admin.host, '0.0.0.0', 'Prometheus scrapes the admin listener from another container');
  t.equal(cfg.store.type, 'redis');
  t.equal(cfg.store.redis.url, 'redis://redis:6379');
  for (const [name, u] of Object.entries(cfg.upstreams)) {
    const target = new URL(typeof u.targets[0] === 'string' ? u.targets[0] : u.targets[0].url);
    t.ok(target.hostname in services, `upstream ${name} targets the compose service ${target.hostname}`);
    t.equal(String(services[target.hostname].environment.PORT), target.port, `on the port that service listens on`);
    t.equal(mountOf(target.hostname, '/srv/echo.mjs'), join(COMPOSE_DIR, 'services', 'echo.mjs'));
  }
  t.same(services.gateway.ports, ['8080:8080', '127.0.0.1:9901:9901'], 'the admin port is published on loopback only');
});

t.test('the Prometheus config passes promtool and scrapes the gateway admin /metrics', { skip: !promtool && 'promtool is not installed (.ci/run installs it)' }, async (t) => {
  const file = mountOf('prometheus', '/etc/prometheus/prometheus.yml')!;
  t.match(services.prometheus.command.join(' '), '--config.file=/etc/prometheus/prometheus.yml');
  const out = execFileSync('promtool', ['check', 'config', file], { encoding: 'utf8' });
  t.match(out, /SUCCESS/);
  const prom = YAML.parse(readFileSync(file, 'utf8'));
  const job = prom.scrape_configs.find((j: any) => j.job_name === 'gateway');
  t.equal(job.metrics_path ?? '/metrics', '/metrics');
  const cfg = loadConfigFile(mountOf('gateway', '/etc/gateway/gateway.yaml')!, { ADMIN_TOKEN: 'x'.repeat(20) });
  t.same(job.static_configs[0].targets, [`gateway:${cfg.admin.port}`], 'the admin listener of the gateway service');
  t.equal(cfg.admin.metricsPublic, true, '/metrics answers without a token');
});

t.test('Grafana provisions Prometheus and the dashboard the chart ships', async (t) => {
  const provisioning = mountOf('grafana', '/etc/grafana/provisioning')!;
  const dashboardFile = join(ROOT, 'charts', 'gateway', 'dashboards', 'gateway.json');
  const dsDoc = YAML.parse(readFileSync(join(provisioning, 'datasources', 'prometheus.yaml'), 'utf8'));
  const ds = dsDoc.datasources[0];
  t.equal(ds.type, 'prometheus');
  t.equal(ds.isDefault, true, 'the dashboard\'s datasource variable picks the default');
  const promPort = services.prometheus.ports[0].split(':').pop();
  t.equal(ds.url, `http://prometheus:${promPort}`);
  const provider = YAML.parse(readFileSync(join(provisioning, 'dashboards', 'gateway.yaml'), 'utf8')).providers[0];
  t.equal(provider.type, 'file');
  const mounted = mounts('grafana').find((m) => dirname(m.container) === provider.options.path);
  t.ok(mounted, 'a file is mounted in the provider\'s folder');
  t.equal(mounted!.host, dashboardFile, 'the shipped dashboard, not a copy');
  t.equal(services.grafana.environment.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH, mounted!.container);
  const dashboard = JSON.parse(readFileSync(dashboardFile, 'utf8'));
  t.equal(dashboard.uid, 'api-gateway');
});

t.test('Dockerfile: base pinned by digest, OCI labels, an example config on 0.0.0.0 in the image', async (t) => {
  const docker = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const froms = docker.split('\n').filter((l) => /^FROM /i.test(l));
  const digests = new Set<string>();
  for (const f of froms) {
    const m = /^FROM node:22-bookworm-slim@(sha256:[0-9a-f]{64}) AS \w+$/.exec(f);
    t.ok(m, `${f}: pinned by digest`);
    if (m) digests.add(m[1]);
  }
  t.equal(digests.size, 1, 'one digest for both stages');
  t.match(docker, /docker buildx imagetools inspect node:22-bookworm-slim/, 'says how to update it');
  const labels = Object.fromEntries([...docker.matchAll(/(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  for (const key of ['title', 'description', 'version', 'revision', 'created', 'licenses', 'source', 'base.name', 'base.digest']) {
    t.ok(`org.opencontainers.image.${key}` in labels, `label org.opencontainers.image.${key}`);
  }
  t.equal(labels['org.opencontainers.image.base.digest'], [...digests][0], 'the base.digest label is the pinned digest');
  t.equal(labels['org.opencontainers.image.licenses'], JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).license);
  t.match(docker, /ARG VERSION=0\.1\.0/);
  t.equal(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version, '0.1.0', 'the default VERSION is the package version');

  const copy = /^COPY (\S+) \/etc\/gateway\/gateway\.yaml$/m.exec(docker);
  t.ok(copy, 'the example config is copied to where CMD reads it');
  const cfg = loadConfigFile(join(ROOT, copy![1]), {});
  t.equal(cfg.listen.host, '0.0.0.0', 'reachable from outside the container');
  t.equal(cfg.admin.host, '0.0.0.0');
  t.notOk(readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').includes('deploy'), 'deploy/ is in the build context');
});
