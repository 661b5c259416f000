/** One problem in a configuration, with the path of the offending field. */
export interface ConfigProblem {
  path: string;
  message: string;
}

/** A configuration that cannot be used, with every problem found. */
export class ConfigError extends Error {
  readonly problems: ConfigProblem[];
  /** The file (or other source) the configuration came from; empty when it has none. */
  readonly source: string;
  constructor(source: string, problems: ConfigProblem[]) {
    super(`invalid configuration${source ? ` in ${source}` : ''}:\n${problems.map(formatProblem).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
    this.source = source;
  }
}

export function formatProblem(p: ConfigProblem): string {
  return p.path ? `${p.path}: ${p.message}` : p.message;
}
