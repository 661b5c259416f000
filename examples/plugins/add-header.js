'use strict';
// A user plugin: adds a header to the upstream request or to the client response on the routes
// that enable it. Configure it in the gateway file:
//
//   plugins:
//     - module: ./plugins/add-header.js        # relative to the configuration file
//       options: { header: X-Tenant, value: acme, to: upstream }
//   routes:
//     - name: users
//       plugins: [add-header]
//
// Plain CommonJS and a JSON Schema, so it needs nothing but the gateway.

const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";

module.exports = {
  name: 'add-header',

  // Validated when the configuration loads; errors name the field (plugins[0].options.header: ...).
  schema: {
    options: {
      type: 'object',
      additionalProperties: false,
      required: ['header', 'value'],
      properties: {
        header: { type: 'string', pattern: HEADER_NAME, expected: 'a header name such as X-Tenant', description: 'The header name.' },
        value: { type: 'string', description: 'The header value.' },
        to: { enum: ['upstream', 'response'], default: 'response', description: 'Where the header goes.' },
      },
    },
  },

  // What the schema cannot say.
  check(options, problems) {
    if (/[\r\n\0]/.test(options.value)) problems.push({ path: 'value', message: 'may not contain CR, LF or NUL' });
  },

  // Runs for every configuration version (start-up and each reload). Work that can be done here is
  // not done per request.
  create(ctx) {
    const { header, value, to } = ctx.options;
    const step =
      to === 'upstream'
        ? { name: ctx.name, run: (req) => (req.addUpstreamHeader(header, value), true) }
        : { name: ctx.name, run: (req) => (req.addResponseHeader(header, value), true) };
    return { stepFor: () => step };
  },
};
