import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import Ajv from 'ajv';
import t from 'tap';
import YAML from 'yaml';
import { renderJsonSchema } from '../src/config/json-schema';
import { ConfigSchema } from '../src/config/schema';
import { readmeWithReference } from '../src/config/reference';

const README = join(__dirname, '..', 'README.md');

t.test('the README config reference is the one generated from the schema', async (t) => {
  const readme = readFileSync(README, 'utf8');
  t.equal(readme, readmeWithReference(readme), 'run `npm run docs` after changing src/config/schema.ts');
});

t.test('every schema field has a description, and a default unless it is required', async (t) => {
  const missing: string[] = [];
  const visit = (s: Record<string, unknown>, path: string, required: boolean): void => {
    if (path && typeof s.description !== 'string') missing.push(`${path}: no description`);
    if (path && !required && s.default === undefined && !isOptionalByDesign(s)) missing.push(`${path}: no default`);
    const props = s.properties as Record<string, Record<string, unknown>> | undefined;
    const req = (s.required as string[] | undefined) ?? [];
    for (const [k, v] of Object.entries(props ?? {})) visit(v, path ? `${path}.${k}` : k, req.includes(k));
    for (const v of Object.values((s.patternProperties as Record<string, Record<string, unknown>>) ?? {})) visit(v, `${path}.<name>`, true);
    const items = s.items as Record<string, unknown> | undefined;
    if (items?.properties) visit(items, `${path}[]`, true);
  };
  // Optional fields without a default mean "absent = feature off" (a CA file, a token, a host list).
  const isOptionalByDesign = (s: Record<string, unknown>) => Object.getOwnPropertySymbols(s).some((sym) => String(sym) === 'Symbol(TypeBox.Optional)');
  visit(ConfigSchema as unknown as Record<string, unknown>, '', true);
  t.same(missing, []);
});

const SCHEMA_FILE = join(__dirname, '..', 'schema', 'gateway.schema.json');

t.test('the committed JSON Schema is the one generated from the schema', async (t) => {
  t.equal(readFileSync(SCHEMA_FILE, 'utf8'), renderJsonSchema(), 'run `npm run docs` after changing the configuration schema');
});

t.test('every example names the JSON Schema for editors, and passes it', async (t) => {
  // Strict ajv refuses keywords that are not JSON Schema, which editors would not understand either.
  const validate = new Ajv({ allErrors: true, strict: true, strictTypes: false }).compile(JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as object);
  const examples = readdirSync(join(__dirname, '..', 'examples')).filter((f) => /\.ya?ml$/.test(f));
  t.ok(examples.length > 0);
  for (const name of examples) {
    const file = join(__dirname, '..', 'examples', name);
    const text = readFileSync(file, 'utf8');
    const first = /^# yaml-language-server: \$schema=(\S+)\n/.exec(text);
    t.ok(first, `${name} starts with a yaml-language-server line`);
    if (!first) continue;
    t.equal(resolve(dirname(file), first[1]), SCHEMA_FILE, `${name} points at the committed schema`);
    t.ok(validate(YAML.parse(text)), `${name} passes the schema as an editor sees it (\${ENV} not yet substituted): ${JSON.stringify(validate.errors)}`);
  }
  t.notOk(validate({ listen: { port: 'eighty' } }), 'a wrong value is flagged');
  t.notOk(validate({ routes: [{ name: 'r', match: { prefix: '/r' } }] }), 'a missing field without a default is flagged');
  t.notOk(validate({ listen: { prot: 80 } }), 'an unknown key is flagged');
  t.ok(validate({ listen: { port: '${PORT:-8080}' }, log: { level: '${LOG_LEVEL}' } }), 'a ${ENV} reference stands in for any value');
});
