import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
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
