import { ConfigSchema } from './schema';

type Node = Record<string, unknown>;

/** Words for error messages (see load.ts); not JSON Schema, so editors and validators never see them. */
const OWN_KEYWORDS = new Set(['expected', 'expectedKey']);

/** A value the loader replaces from the environment before validating: the file may hold it anywhere a scalar goes. */
const WHOLE_ENV_REF = {
  type: 'string',
  pattern: '^\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}$',
  description: 'An environment variable, ${NAME} or ${NAME:-default}, replaced when the file is loaded.',
};
const ENV_REF_INSIDE = { ...WHOLE_ENV_REF, pattern: '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}' };

const CHECKED_STRING = ['pattern', 'minLength', 'maxLength'];

function publish(node: Node): Node {
  const out: Node = {};
  for (const [k, v] of Object.entries(node)) {
    if (OWN_KEYWORDS.has(k)) continue;
    if ((k === 'properties' || k === 'patternProperties') && v && typeof v === 'object') {
      out[k] = Object.fromEntries(Object.entries(v as Record<string, Node>).map(([name, s]) => [name, publish(s)]));
    } else if (k === 'items' && v && typeof v === 'object') out[k] = publish(v as Node);
    else if (k === 'anyOf' && Array.isArray(v)) out[k] = (v as Node[]).map(publish);
    else out[k] = v;
  }
  // TypeBox lists every non-optional key as required, but the loader fills the ones with a
  // default: a file needs to say only what has none.
  if (Array.isArray(out.required)) {
    const props = (node.properties ?? {}) as Record<string, Node>;
    const required = (out.required as string[]).filter((k) => props[k]?.default === undefined);
    if (required.length) out.required = required;
    else delete out.required;
  }
  // The file is checked before ${ENV} substitution: a reference stands in for a number, a
  // boolean, a choice or a string of a set form, and the loader checks the substituted value.
  const scalar = out.type === 'integer' || out.type === 'number' || out.type === 'boolean' || out.anyOf !== undefined;
  const checkedString = out.type === 'string' && CHECKED_STRING.some((k) => k in out);
  if (!scalar && !checkedString) return out;
  const { description, default: def, ...rest } = out;
  return {
    ...(description === undefined ? {} : { description }),
    ...(def === undefined ? {} : { default: def }),
    anyOf: [rest, scalar ? WHOLE_ENV_REF : ENV_REF_INSIDE],
  };
}

/** The JSON Schema of the configuration file, for editors (yaml-language-server) and other tools. */
export function configJsonSchema(): Node {
  const plain = JSON.parse(JSON.stringify(ConfigSchema)) as Node;
  return { $schema: 'http://json-schema.org/draft-07/schema#', title: 'API gateway configuration', ...publish(plain) };
}

/** The committed schema file's text (schema/gateway.schema.json), as `gateway schema` prints it. */
export function renderJsonSchema(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
