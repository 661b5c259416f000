import { createPublicKey } from 'node:crypto';
import { createVerifier, TokenError, type Algorithm } from 'fast-jwt';
import { ClaimsReader } from './claims';
import { ConsumerDirectory, type Verified } from './consumers';
import { AuthFailure } from './failure';
import type { IdentityHeaderNames } from './identity-headers';
import type { JwksKeySource } from './jwks';
import type { CounterCell } from '../../observability/fast-metrics';
import type { JwtAlgorithm, JwtConfig, JwtKeyConfig } from './schema';
import { TtlCache } from './ttl-cache';

/** A verified token's decoded parts. */
export interface VerifiedToken {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
}

/** A fast-jwt verifier bound to one key: returns the decoded token or throws a TokenError. */
export type KeyVerifier = (token: string) => VerifiedToken;

/** The options every key's verifier shares: the claim rules of the configuration. */
export interface ClaimRules {
  requiredClaims: string[];
  allowedIss?: string;
  allowedAud?: string[];
  clockTolerance: number;
}

/** The claim rules of one issuer: the shared settings of `cfg` with the issuer's own `iss` and audience. */
export function claimRules(cfg: JwtConfig, keys: JwtKeyConfig): ClaimRules {
  const required = new Set(cfg.requiredClaims);
  // fast-jwt checks iss/aud only when the claim is present: requiring them closes that gap.
  if (keys.issuer !== undefined) required.add('iss');
  if (keys.audience !== undefined) required.add('aud');
  return {
    requiredClaims: [...required],
    allowedIss: keys.issuer,
    allowedAud: keys.audience,
    clockTolerance: cfg.clockToleranceSec * 1000,
  };
}

/**
 * A verifier for one key and the algorithms both configured and compatible with it. No verifier
 * ever accepts `none` (fast-jwt refuses unsigned tokens once a key is set) and no public key is
 * ever used as an HMAC secret (HS* never reaches a public-key verifier).
 */
export function keyVerifier(key: string, algorithms: readonly JwtAlgorithm[], rules: ClaimRules): KeyVerifier {
  return createVerifier({
    key,
    algorithms: algorithms as Algorithm[],
    cache: false,
    // The header too: a route may accept only some token types (`typ`).
    complete: true,
    requiredClaims: rules.requiredClaims,
    allowedIss: rules.allowedIss,
    allowedAud: rules.allowedAud,
    clockTolerance: rules.clockTolerance,
  }) as KeyVerifier;
}

/**
 * Checks that `pem` is a public key (or certificate) usable with at least one configured
 * algorithm, and returns that PEM. Throws with a readable message otherwise.
 */
export function loadPublicKey(pem: string, algorithms: readonly JwtAlgorithm[]): string {
  let key;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new Error('is not a PEM public key or certificate');
  }
  if (/PRIVATE KEY-----/.test(pem)) throw new Error('holds a private key; configure the public key only');
  const compatible = algorithmsForKey(key.asymmetricKeyType, key.asymmetricKeyDetails?.namedCurve, algorithms);
  if (compatible.length === 0) {
    throw new Error(`a ${key.asymmetricKeyType} key cannot verify any of ${algorithms.join(', ')}`);
  }
  return pem;
}

const EC_CURVES: Record<string, string> = {
  prime256v1: 'ES256',
  'P-256': 'ES256',
  secp384r1: 'ES384',
  'P-384': 'ES384',
  secp521r1: 'ES512',
  'P-521': 'ES512',
};

/** The configured algorithms a key of this type can verify. */
export function algorithmsForKey(type: string | undefined, curve: string | undefined, algorithms: readonly JwtAlgorithm[]): JwtAlgorithm[] {
  return algorithms.filter((a) => {
    switch (type) {
      case 'rsa':
        return a.startsWith('RS') || a.startsWith('PS');
      case 'rsa-pss':
        return a.startsWith('PS');
      case 'ec':
        return curve !== undefined && EC_CURVES[curve] === a;
      case 'ed25519':
      case 'ed448':
        return a === 'EdDSA';
      default:
        return false;
    }
  });
}

/** Fixed messages for fast-jwt's error codes: clear, and free of anything the token said. */
export function tokenMessage(err: unknown): string {
  if (!(err instanceof TokenError)) return 'the token is not valid';
  switch (err.code) {
    case TokenError.codes.expired:
      return 'the token has expired';
    case TokenError.codes.inactive:
      return 'the token is not valid yet (nbf)';
    case TokenError.codes.missingRequiredClaim:
      return 'the token lacks a required claim';
    case TokenError.codes.invalidClaimValue:
    case TokenError.codes.invalidClaimType:
      return 'the token issuer, audience or a time claim is not accepted';
    case TokenError.codes.invalidCritHeader:
      return 'the token has an unsupported critical header';
    case TokenError.codes.invalidAlgorithm:
      return 'the token algorithm is not accepted';
    case TokenError.codes.malformed:
    case TokenError.codes.invalidPayload:
    case TokenError.codes.invalidType:
      return 'the token is malformed';
    default:
      return 'the token signature is invalid';
  }
}

/**
 * The largest NumericDate accepted: 9999-12-31T23:59:59Z. RFC 7519 §2 defines the type but no
 * range; anything later is a forged or broken token rather than a real expiry, and this bound keeps
 * `value * 1000` a valid JavaScript date.
 */
const MAX_NUMERIC_DATE = 253402300799;

const TIME_CLAIMS = ['exp', 'nbf', 'iat'] as const;

/**
 * RFC 7519 §2: exp, nbf and iat are NumericDates, finite JSON numbers of seconds since the epoch.
 * fast-jwt checks only that exp and nbf are numbers (so `1e308` or `1e400`, read as Infinity, never
 * expire) and ignores iat; anything outside [0, MAX_NUMERIC_DATE] is refused here.
 */
export function checkTimeClaims(payload: Record<string, unknown>): void {
  for (const claim of TIME_CLAIMS) {
    if (!(claim in payload)) continue;
    const v = payload[claim];
    if (typeof v !== 'number' || !(v >= 0 && v <= MAX_NUMERIC_DATE)) {
      throw new AuthFailure(`the token claim "${claim}" is not a date (seconds since 1970, up to the year 9999)`);
    }
  }
}

/**
 * A `typ` value as a comparable media type (RFC 7515 §4.1.9): lower-case (media types are
 * case-insensitive), and `application/` prepended when it has no `/`, so at+jwt, AT+JWT and
 * application/at+jwt are one type.
 */
export function tokenMediaType(typ: string): string {
  const t = typ.toLowerCase();
  return t.includes('/') ? t : `application/${t}`;
}

function tokenTypeOf(header: Record<string, unknown>): string | null {
  const typ = header.typ;
  if (typ === undefined) return null;
  if (typeof typ !== 'string') throw new AuthFailure('the token typ must be a string');
  return tokenMediaType(typ);
}

/** Where the key of a token comes from: one configured key, or a JWKS with a key per `kid`. */
export type KeySource = { kind: 'static'; verify: KeyVerifier } | { kind: 'jwks'; jwks: JwksKeySource };

/** One accepted issuer: its keys, and the count of its tokens verified. */
export interface IssuerKeys {
  keys: KeySource;
  verified: CounterCell;
}

/**
 * The issuers a token may come from: one (the single-issuer form, whatever its `iss`), or several
 * picked by the token's `iss`, with the count of tokens whose `iss` is none of them.
 */
export type TokenIssuers = { one: IssuerKeys } | { byIss: ReadonlyMap<string, IssuerKeys>; unknown: CounterCell };

interface CachedToken {
  verified: Verified;
}

/**
 * Verifies bearer tokens and turns their claims into an identity. Results are cached per whole
 * token, bounded, and never past the token's `exp`, so a repeated token costs one map lookup.
 */
export class JwtAuthenticator {
  private readonly cache: TtlCache<CachedToken>;
  private readonly claims: ClaimsReader;

  constructor(
    private readonly cfg: JwtConfig,
    private readonly issuers: TokenIssuers,
    private readonly consumers: ConsumerDirectory,
    names: IdentityHeaderNames,
    /** `cfg.maxTokenBytes`, or the listener's header limit when it is not set. */
    private readonly maxTokenBytes: number,
  ) {
    this.cache = new TtlCache(cfg.cache.maxEntries);
    this.claims = new ClaimsReader(cfg.claims, cfg.claimHeaders, names, 'the token', 'the token claim');
  }

  /** The identity a token proves; throws AuthFailure. Synchronous unless a JWKS refetch is needed. */
  authenticate(token: string): Verified | Promise<Verified> {
    if (token.length > this.maxTokenBytes) throw new AuthFailure('the token is too large');
    const now = Date.now();
    const hit = this.cache.get(token, now);
    if (hit !== undefined) return hit.verified;
    const issuer = this.issuerOf(token);
    issuer.verified.inc();
    const keys = issuer.keys;
    if (keys.kind === 'static') return this.verifyWith(keys.verify, token, now);
    const kid = tokenKid(token);
    const verify = keys.jwks.verifierFor(kid);
    if (verify !== null) return this.verifyWith(verify, token, now);
    return keys.jwks.refetchFor(kid).then((v) => this.verifyWith(v, token, Date.now()));
  }

  /** The issuer whose keys verify `token`: with several, the one its `iss` names, read before any signature work. */
  private issuerOf(token: string): IssuerKeys {
    const issuers = this.issuers;
    if ('one' in issuers) return issuers.one;
    const iss = tokenIssuer(token);
    const known = iss === undefined ? undefined : issuers.byIss.get(iss);
    if (known !== undefined) return known;
    issuers.unknown.inc();
    throw new AuthFailure(iss === undefined ? 'the token names no issuer (iss)' : 'the token issuer (iss) is not accepted', false, false, 'UNKNOWN_TOKEN_ISSUER');
  }

  private verifyWith(verify: KeyVerifier, token: string, now: number): Verified {
    let decoded: VerifiedToken;
    try {
      decoded = verify(token);
    } catch (err) {
      throw new AuthFailure(tokenMessage(err));
    }
    const payload = decoded.payload;
    checkTimeClaims(payload);
    const verified = this.identityOf(payload, tokenTypeOf(decoded.header));
    const exp = payload.exp;
    let until = now + this.cfg.cache.ttlMs;
    if (typeof exp === 'number') until = Math.min(until, exp * 1000);
    if (until > now) this.cache.set(token, { verified }, until);
    return verified;
  }

  private identityOf(payload: Record<string, unknown>, tokenType: string | null): Verified {
    const claim = this.claims.names.consumer;
    const consumerId = payload[claim];
    if (typeof consumerId !== 'string' || consumerId === '') throw new AuthFailure(`the token has no "${claim}" claim to identify the caller`);
    return { ...this.claims.verified(payload, consumerId, 'jwt', this.consumers), tokenType };
  }
}

const B64URL = /^[A-Za-z0-9_-]+$/;

/**
 * The `kid` of a token's header, or undefined. Only a lookup key into the configured key set:
 * never a path, URL or anything fetched. `jku`, `x5u`, `jwk` and `x5c` are ignored entirely.
 */
export function tokenKid(token: string): string | undefined {
  const dot = token.indexOf('.');
  const kid = segmentObject(dot < 0 ? '' : token.slice(0, dot)).kid;
  if (kid === undefined) return undefined;
  if (typeof kid !== 'string') throw new AuthFailure('the token kid must be a string');
  return kid;
}

/**
 * The `iss` of a token's payload (undefined when it has none), read without verifying anything: it only picks which issuer's
 * keys verify the token, and that verification checks `iss` again (exactly).
 */
export function tokenIssuer(token: string): string | undefined {
  const first = token.indexOf('.');
  const second = first < 0 ? -1 : token.indexOf('.', first + 1);
  const iss = segmentObject(second < 0 ? '' : token.slice(first + 1, second)).iss;
  if (iss !== undefined && typeof iss !== 'string') throw new AuthFailure('the token claim "iss" must be a string');
  return iss;
}

/** A token segment decoded as the JSON object it must be (not yet verified); AuthFailure otherwise. */
function segmentObject(segment: string): Record<string, unknown> {
  if (!B64URL.test(segment)) throw new AuthFailure('the token is malformed');
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    throw new AuthFailure('the token is malformed');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new AuthFailure('the token is malformed');
  return value as Record<string, unknown>;
}
