import type { Registry } from 'prom-client';

/**
 * Hot-path metrics. prom-client re-hashes the label set on every observation, even through a
 * labelled child; these families resolve a label set once (`child(...)`) into a plain cell, so
 * recording is a few arithmetic operations. They register into a prom-client Registry through its
 * metric interface (name, type, get), so the exposition stays prom-client's.
 */

type Labels = Record<string, string>;

interface Exposed {
  labels: Labels;
  value: number;
  metricName?: string;
  /** Shown in the OpenMetrics format only (prom-client's field). */
  exemplar?: { labelSet: Labels; value: number; timestamp: number };
}

abstract class Family<Cell> {
  readonly type: 'counter' | 'gauge' | 'histogram';
  private readonly cells = new Map<string, { labels: Labels; cell: Cell }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    type: 'counter' | 'gauge' | 'histogram',
    registry: Registry,
  ) {
    this.type = type;
    registry.registerMetric(this as never);
  }

  protected abstract newCell(): Cell;
  protected abstract expose(labels: Labels, cell: Cell, out: Exposed[]): void;

  /** The cell for these label values (in labelNames order); keep it and record on it directly. */
  child(...values: string[]): Cell {
    const key = values.join('\u0000');
    let entry = this.cells.get(key);
    if (entry === undefined) {
      const labels: Labels = {};
      this.labelNames.forEach((n, i) => (labels[n] = values[i]));
      entry = { labels, cell: this.newCell() };
      this.cells.set(key, entry);
    }
    return entry.cell;
  }

  get(): { name: string; help: string; type: string; values: Exposed[]; aggregator: 'sum' } {
    const values: Exposed[] = [];
    for (const { labels, cell } of this.cells.values()) this.expose(labels, cell, values);
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' };
  }

  reset(): void {
    this.cells.clear();
  }
}

export class CounterCell {
  value = 0;
  inc(by = 1): void {
    this.value += by;
  }
}

export class CounterFamily extends Family<CounterCell> {
  constructor(name: string, help: string, labelNames: readonly string[], registry: Registry) {
    super(name, help, labelNames, 'counter', registry);
  }
  protected newCell(): CounterCell {
    return new CounterCell();
  }
  protected expose(labels: Labels, cell: CounterCell, out: Exposed[]): void {
    out.push({ labels, value: cell.value });
  }
}

export class GaugeCell {
  value = 0;
  set(v: number): void {
    this.value = v;
  }
  inc(by = 1): void {
    this.value += by;
  }
  dec(by = 1): void {
    this.value -= by;
  }
}

export class GaugeFamily extends Family<GaugeCell> {
  constructor(name: string, help: string, labelNames: readonly string[], registry: Registry) {
    super(name, help, labelNames, 'gauge', registry);
  }
  protected newCell(): GaugeCell {
    return new GaugeCell();
  }
  protected expose(labels: Labels, cell: GaugeCell, out: Exposed[]): void {
    out.push({ labels, value: cell.value });
  }
}

/** The latest traced observation of each bucket of a histogram cell. */
export class Exemplars {
  readonly traceIds: string[];
  readonly values: Float64Array;
  /** Seconds since the epoch, as OpenMetrics writes them. */
  readonly times: Float64Array;

  constructor(buckets: number) {
    this.traceIds = new Array<string>(buckets).fill('');
    this.values = new Float64Array(buckets);
    this.times = new Float64Array(buckets);
  }
}

export class HistogramCell {
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  /** Made on the first observation that names a trace. */
  exemplars: Exemplars | null = null;

  constructor(private readonly bounds: Float64Array) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Records `v`; with `traceId` (a sampled trace), it becomes its bucket's exemplar. */
  observe(v: number, traceId = ''): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
    if (traceId !== '') {
      const e = (this.exemplars ??= new Exemplars(this.counts.length));
      e.traceIds[i] = traceId;
      e.values[i] = v;
      e.times[i] = Date.now() / 1000;
    }
  }
}

export class HistogramFamily extends Family<HistogramCell> {
  private readonly bounds: Float64Array;
  private readonly le: string[];

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[], registry: Registry) {
    super(name, help, labelNames, 'histogram', registry);
    this.bounds = Float64Array.from([...buckets].sort((a, b) => a - b));
    this.le = [...this.bounds].map(String).concat('+Inf');
  }
  protected newCell(): HistogramCell {
    return new HistogramCell(this.bounds);
  }
  protected expose(labels: Labels, cell: HistogramCell, out: Exposed[]): void {
    let cumulative = 0;
    const e = cell.exemplars;
    for (let i = 0; i < this.le.length; i++) {
      cumulative += cell.counts[i];
      const bucket: Exposed = { labels: { ...labels, le: this.le[i] }, value: cumulative, metricName: `${this.name}_bucket` };
      if (e !== null && e.traceIds[i] !== '') bucket.exemplar = { labelSet: { trace_id: e.traceIds[i] }, value: e.values[i], timestamp: e.times[i] };
      out.push(bucket);
    }
    out.push({ labels, value: cell.sum, metricName: `${this.name}_sum` });
    out.push({ labels, value: cell.count, metricName: `${this.name}_count` });
  }
}
