import { Type, type Static } from '@sinclair/typebox';

export const USER_PLUGIN_NAME = '^[A-Za-z0-9_.-]{1,64}$';
const USER_PLUGIN_NAME_WORDS = 'a plugin name of 1 to 64 letters, digits and _ . -';

export const UserPluginSchema = Type.Object(
  {
    name: Type.Optional(
      Type.String({
        description: "Name routes enable the plugin by (a route's `plugins`). Defaults to the module's `name`; name it to load one module twice with different options.",
        pattern: USER_PLUGIN_NAME,
        expected: USER_PLUGIN_NAME_WORDS,
      }),
    ),
    module: Type.String({
      description:
        'The CommonJS module exporting the plugin (name, schema.options, check, create): a path relative to the configuration file, or a package name. Loaded once per process; a code change needs a restart.',
      minLength: 1,
    }),
    options: Type.Record(Type.String(), Type.Unknown({ description: 'An option of the plugin.' }), {
      description: "Options handed to the plugin, validated against the module's `schema.options` (its defaults applied) when the configuration loads.",
      default: {},
    }),
    phase: Type.Union([Type.Literal('access'), Type.Literal('request')], {
      description:
        "Where the plugin's steps run: access (after IP rules and CORS, before authentication: no identity yet), or request (after authentication, the cache lookup and rate limits, before header rules, the envelope, deprecation headers and the body limit).",
      default: 'request',
    }),
  },
  { additionalProperties: false, description: 'A user plugin: a module whose step runs on the routes that enable it by name.' },
);

export const UserPluginsSchema = Type.Array(UserPluginSchema, {
  description: 'User plugins: modules that add a step to the chain of the routes naming them. Within a phase, steps run in this order.',
  default: [],
});

export const RouteUserPluginsSchema = Type.Array(Type.String({ description: 'The name of a plugin in the top-level `plugins`.', pattern: USER_PLUGIN_NAME, expected: USER_PLUGIN_NAME_WORDS }), {
  description: 'User plugins this route runs, by name (none by default, so a route without them pays nothing).',
  default: [],
  uniqueItems: true,
});

export type UserPluginConfig = Static<typeof UserPluginSchema>;

/** The configuration fields of user plugins: the modules at the top level, the names a route enables. */
export const userFields = { top: { plugins: UserPluginsSchema }, route: { plugins: RouteUserPluginsSchema } };
