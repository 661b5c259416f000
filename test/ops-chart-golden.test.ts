import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv from 'ajv';
import t from 'tap';
import YAML from 'yaml';

// No Go template renderer installs from npm or Debian (helm is in neither), so the chart's new parts
// are pinned by golden manifests (test/golden/chart-*.yaml), and this test holds three things
// together: the golden files, the values they come from, and the template text that emits them.
const ROOT = join(__dirname, '..');
const CHART = join(ROOT, 'charts', 'gateway');
const RELEASE = 'gw';
type V = Record<string, any>;

const defaults = YAML.parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as V;
const full = YAML.parse(readFileSync(join(CHART, 'ci', 'full-values.yaml'), 'utf8')) as V;
const chart = YAML.parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as V;
const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8')) as object;
const template = (name: string) => readFileSync(join(CHART, 'templates', name), 'utf8');
const golden = (name: string) => YAML.parseAllDocuments(readFileSync(join(ROOT, 'test', 'golden', name), 'utf8')).map((d) => d.toJS() as V).filter(Boolean);

/** Helm's merge of a -f file over values.yaml: maps merge key by key, everything else is replaced. */
function merge(base: V, over: V): V {
  const out: V = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && base[k] && typeof base[k] === 'object' && !Array.isArray(base[k]) ? merge(base[k], v) : v;
  }
  return out;
}

/** What the templates emit for these values, mirrored field by field (the golden files must agree). */
function manifests(values: V): V[] {
  const name = `${RELEASE}-${chart.name}`;
  const selector = { 'app.kubernetes.io/name': chart.name, 'app.kubernetes.io/instance': RELEASE };
  const labels = { 'helm.sh/chart': `${chart.name}-${chart.version}`, ...selector, 'app.kubernetes.io/version': values.image.tag || chart.appVersion, 'app.kubernetes.io/managed-by': 'Helm' };
  const admin = { ...labels, 'app.kubernetes.io/component': 'admin' };
  const s = values.service;
  const out: V[] = [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, labels, ...(Object.keys(s.annotations).length ? { annotations: s.annotations } : {}) },
      spec: {
        type: s.type,
        ...(s.externalTrafficPolicy && s.type !== 'ClusterIP' ? { externalTrafficPolicy: s.externalTrafficPolicy } : {}),
        ...(s.loadBalancerSourceRanges.length && s.type === 'LoadBalancer' ? { loadBalancerSourceRanges: s.loadBalancerSourceRanges } : {}),
        selector,
        ports: [{ name: 'http', port: s.port, targetPort: 'http', protocol: 'TCP' }],
      },
    },
  ];
  if (values.adminService.enabled) {
    out.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: `${name}-admin`, labels: admin },
      spec: { type: 'ClusterIP', selector, ports: [{ name: 'admin', port: values.adminService.port, targetPort: 'admin', protocol: 'TCP' }] },
    });
  }
  const ing = values.adminIngress;
  if (ing.enabled) {
    out.push({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: { name: `${name}-admin`, labels: admin, ...(Object.keys(ing.annotations).length ? { annotations: ing.annotations } : {}) },
      spec: {
        ...(ing.className ? { ingressClassName: ing.className } : {}),
        ...(ing.tls.length ? { tls: ing.tls } : {}),
        rules: (ing.hosts.length ? ing.hosts : ['']).map((host: string) => ({
          ...(host ? { host } : {}),
          http: { paths: ing.paths.map((path: string) => ({ path, pathType: 'Prefix', backend: { service: { name: `${name}-admin`, port: { name: 'admin' } } } })) },
        })),
      },
    });
  }
  const route = values.adminHTTPRoute;
  if (route.enabled) {
    out.push({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: `${name}-admin`, labels: admin, ...(Object.keys(route.annotations).length ? { annotations: route.annotations } : {}) },
      spec: {
        parentRefs: route.parentRefs,
        ...(route.hostnames.length ? { hostnames: route.hostnames } : {}),
        rules: [{ matches: route.paths.map((value: string) => ({ path: { type: 'PathPrefix', value } })), backendRefs: [{ name: `${name}-admin`, port: values.adminService.port }] }],
      },
    });
  }
  // tpl with the release: the only expression the example objects use.
  for (const o of values.extraObjects) out.push(JSON.parse(JSON.stringify(o).replaceAll('{{ .Release.Name }}', RELEASE)));
  return out;
}

t.test('the full values file is valid, and the schema refuses what would render a broken manifest', async (t) => {
  const validate = new Ajv({ strict: true, allowUnionTypes: true, allErrors: true }).compile(schema);
  t.ok(validate(merge(defaults, full)), JSON.stringify(validate.errors));
  const bad = (over: V, where: string) => {
    t.notOk(validate(merge(merge(defaults, full), over)), where);
    t.match(JSON.stringify(validate.errors), where);
  };
  bad({ service: { externalTrafficPolicy: 'local' } }, '/service/externalTrafficPolicy');
  bad({ service: { loadBalancerSourceRanges: ['10.0.0.1'] } }, '/service/loadBalancerSourceRanges/0');
  bad({ adminHTTPRoute: { parentRefs: [] } }, '/adminHTTPRoute/parentRefs');
  bad({ adminIngress: { paths: ['metrics'] } }, '/adminIngress/paths/0');
  bad({ initContainers: [{ name: 'x' }] }, '/initContainers/0');
  bad({ topologySpreadConstraints: [{ maxSkew: 1 }] }, '/topologySpreadConstraints/0');
});

t.test('golden manifests: the default values render the Services only', async (t) => {
  const docs = golden('chart-default.yaml');
  t.same(docs, manifests(defaults));
  t.same(docs.map((d) => d.kind), ['Service', 'Service']);
  t.notOk('externalTrafficPolicy' in docs[0].spec, 'ClusterIP: no traffic policy');
});

t.test('golden manifests: the full values render the load balancer settings, the admin Ingress and HTTPRoute, the extra objects', async (t) => {
  const docs = golden('chart-full.yaml');
  t.same(docs, manifests(merge(defaults, full)));
  t.same(docs.map((d) => d.kind), ['Service', 'Service', 'Ingress', 'HTTPRoute', 'NetworkPolicy']);
  t.equal(docs[0].spec.externalTrafficPolicy, 'Local', 'client IPs reach the pods');
});

t.test('the templates emit every field of the golden manifests', async (t) => {
  const service = template('service.yaml');
  t.match(service, /\{\{- if and \.Values\.service\.externalTrafficPolicy \(ne \.Values\.service\.type "ClusterIP"\) \}\}\n  externalTrafficPolicy: \{\{ \.Values\.service\.externalTrafficPolicy \}\}/);
  t.match(service, /\{\{- if and \.Values\.service\.loadBalancerSourceRanges \(eq \.Values\.service\.type "LoadBalancer"\) \}\}\n  loadBalancerSourceRanges:\n    \{\{- toYaml \.Values\.service\.loadBalancerSourceRanges \| nindent 4 \}\}/);
  const ingress = template('admin-ingress.yaml');
  for (const needle of ['kind: Ingress', 'ingressClassName: {{ . }}', 'host: {{ $host | quote }}', 'pathType: Prefix', 'name: admin', '{{- fail "adminIngress needs adminService.enabled" }}']) t.ok(ingress.includes(needle), `admin-ingress.yaml: ${needle}`);
  const route = template('admin-httproute.yaml');
  for (const needle of ['kind: HTTPRoute', 'toYaml .Values.adminHTTPRoute.parentRefs', 'type: PathPrefix', 'port: {{ .Values.adminService.port }}', 'fail "adminHTTPRoute needs parentRefs']) t.ok(route.includes(needle), `admin-httproute.yaml: ${needle}`);
  t.match(template('extra-objects.yaml'), /\{\{- range \.Values\.extraObjects \}\}\n---\n\{\{ tpl \(toYaml \.\) \$ \}\}/);
  const deployment = template('deployment.yaml');
  const init = deployment.indexOf('initContainers:');
  t.ok(init > 0 && init < deployment.indexOf('containers:\n        - name: gateway'), 'initContainers come before the gateway container');
  for (const needle of ['.Values.initContainers', '.Values.extraVolumes', '.Values.extraVolumeMounts', '.Values.extraEnv', '.Values.topologySpreadConstraints']) t.ok(deployment.includes(needle), `deployment.yaml uses ${needle}`);
});
