import { readFileSync, writeFileSync } from 'node:fs';
import type { Verdict } from './guard';

/** The parts of a bench results file (bench/results/*.json) the report draws. */
export interface ReportInput {
  date: string;
  node: string;
  reference: string;
  bare: string;
  options?: { durationS?: number; rounds?: number; connections?: number };
  scenarios: {
    name: string;
    description: string;
    rps: number;
    p50: number;
    p99: number;
    vsReference: number | null;
    vsBare: number | null;
    /** Ratios of best rounds (absent in results written before they existed). */
    bestVsReference?: number | null;
    bestVsBare?: number | null;
    /** Medians of same-round ratios (absent in results written before they existed). */
    pairedVsReference?: number | null;
    pairedVsBare?: number | null;
    cpuUsPerReq: number | null;
    errors: number;
    non2xx: number;
    rounds: { rps: number }[];
  }[];
  verdicts?: Verdict[];
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (n: number): string => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));

interface Bar {
  label: string;
  value: number;
  /** Whisker from the slowest to the fastest round. */
  range?: [number, number];
  /** A floor drawn as a mark across the bar. */
  floor?: number;
  text: string;
  colour: string;
}

const LABEL_W = 210;
const CHART_W = 520;
const ROW_H = 26;

/** One horizontal bar chart as inline SVG (no script, no external resource). */
function barChart(title: string, bars: Bar[], unit: string): string {
  const max = Math.max(...bars.flatMap((b) => [b.value, b.range?.[1] ?? 0, b.floor ?? 0]), 1e-9) * 1.1;
  const x = (v: number) => LABEL_W + (v / max) * CHART_W;
  const h = bars.length * ROW_H + 40;
  const rows = bars.map((b, i) => {
    const y = 30 + i * ROW_H;
    const parts = [
      `<text x="${LABEL_W - 8}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>`,
      `<rect x="${LABEL_W}" y="${y + 3}" width="${Math.max(1, x(b.value) - LABEL_W).toFixed(1)}" height="${ROW_H - 8}" fill="${b.colour}"><title>${esc(`${b.label}: ${b.text}`)}</title></rect>`,
      `<text x="${(Math.max(x(b.value), b.range ? x(b.range[1]) : 0, b.floor !== undefined ? x(b.floor) : 0) + 6).toFixed(1)}" y="${y + 15}">${esc(b.text)}</text>`,
    ];
    if (b.range) {
      const [lo, hi] = b.range.map(x);
      parts.push(`<line x1="${lo.toFixed(1)}" x2="${hi.toFixed(1)}" y1="${y + ROW_H / 2}" y2="${y + ROW_H / 2}" stroke="#222" stroke-width="1.5"/>`);
    }
    if (b.floor !== undefined) {
      const fx = x(b.floor).toFixed(1);
      parts.push(`<line x1="${fx}" x2="${fx}" y1="${y}" y2="${y + ROW_H - 2}" stroke="#c00" stroke-width="3"><title>floor ${fmt(b.floor)}</title></line>`);
    }
    return parts.join('');
  });
  return [
    `<svg width="${LABEL_W + CHART_W + 140}" height="${h}" role="img" aria-label="${esc(title)}">`,
    `<text x="0" y="16" font-weight="bold">${esc(title)} <tspan font-weight="normal" fill="#555">(${esc(unit)})</tspan></text>`,
    `<line x1="${LABEL_W}" x2="${LABEL_W}" y1="26" y2="${h - 10}" stroke="#888"/>`,
    ...rows,
    '</svg>',
  ].join('\n');
}

/** A self-contained HTML page of a bench run: throughput, ratios against their floors, latency, CPU. */
export function renderReport(r: ReportInput): string {
  const verdictsOf = (name: string) => (r.verdicts ?? []).filter((v) => v.scenario === name);
  const failed = (name: string) => verdictsOf(name).some((v) => !v.ok);
  const colour = (name: string) => (failed(name) ? '#d9534f' : name === r.reference ? '#888' : name === r.bare ? '#3a7bd5' : '#5cb85c');
  const throughput = barChart(
    'Throughput, median of the rounds; whiskers span the slowest and fastest round',
    r.scenarios.map((s) => {
      const rps = s.rounds.map((x) => x.rps);
      return { label: s.name, value: s.rps, range: rps.length > 1 ? [Math.min(...rps), Math.max(...rps)] : undefined, text: `${fmt(s.rps)} req/s`, colour: colour(s.name) };
    }),
    'requests per second, higher is better',
  );
  const floorOf = (name: string, metric: string) => verdictsOf(name).find((v) => v.metric === metric)?.floor ?? undefined;
  // The floors apply to the ratios of best rounds (the least disturbed ones), so those are drawn.
  const ratio = (metric: 'vsReference' | 'vsBare', base: string) => {
    const best = metric === 'vsReference' ? 'bestVsReference' : 'bestVsBare';
    const value = (s: ReportInput['scenarios'][number]) => s[best] ?? s[metric];
    return barChart(
      `Ratio to ${base}, best rounds; red marks are the bench:ci floors`,
      r.scenarios
        .filter((s) => value(s) !== null)
        .map((s) => ({ label: s.name, value: value(s)!, floor: floorOf(s.name, metric), text: `× ${value(s)!.toFixed(2)}`, colour: colour(s.name) })),
      `best round req/s ÷ best ${base} round, higher is better`,
    );
  };
  const latency = barChart(
    'Latency under load',
    r.scenarios.flatMap((s) => [
      { label: `${s.name} p50`, value: s.p50, text: `${s.p50} ms`, colour: '#7fa7e0' },
      { label: `${s.name} p99`, value: s.p99, text: `${s.p99} ms`, colour: '#2a5caa' },
    ]),
    'milliseconds, lower is better',
  );
  const withCpu = r.scenarios.filter((s) => s.cpuUsPerReq !== null);
  const cpu = withCpu.length
    ? barChart('CPU time of the serving process per request', withCpu.map((s) => ({ label: s.name, value: s.cpuUsPerReq!, text: `${fmt(s.cpuUsPerReq!)} µs`, colour: colour(s.name) })), 'µs per request, lower is better')
    : '';
  const verdictRows = (r.verdicts ?? [])
    .map((v) => `<tr class="${v.ok ? 'ok' : 'fail'}"><td>${v.ok ? 'pass' : 'FAIL'}</td><td>${esc(v.message)}</td></tr>`)
    .join('\n');
  const table = r.scenarios
    .map(
      (s) =>
        `<tr><td>${esc(s.name)}</td><td>${esc(s.description)}</td><td>${fmt(s.rps)}</td><td>${s.p50}</td><td>${s.p99}</td><td>${s.vsReference?.toFixed(2) ?? '-'}</td><td>${s.vsBare?.toFixed(2) ?? '-'}</td><td>${s.bestVsReference?.toFixed(2) ?? '-'}</td><td>${s.bestVsBare?.toFixed(2) ?? '-'}</td><td>${s.pairedVsReference?.toFixed(2) ?? '-'}</td><td>${s.pairedVsBare?.toFixed(2) ?? '-'}</td><td>${s.cpuUsPerReq === null ? '-' : fmt(s.cpuUsPerReq)}</td><td>${s.errors}</td><td>${s.non2xx}</td></tr>`,
    )
    .join('\n');
  const o = r.options ?? {};
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gateway bench ${esc(r.date)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
svg { display: block; margin: 18px 0; font: 12px system-ui, sans-serif; }
table { border-collapse: collapse; margin: 12px 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
tr.fail td { background: #f8d7da; } tr.ok td:first-child { color: #2d7a2d; }
</style></head><body>
<h1>Gateway bench</h1>
<p>${esc(r.date)} · Node ${esc(r.node)} · ${o.rounds ?? '?'} interleaved rounds of ${o.durationS ?? '?'} s at ${o.connections ?? '?'} connections ·
reference <b>${esc(r.reference)}</b>, bare route <b>${esc(r.bare)}</b></p>
${r.verdicts ? `<h2>bench:ci floors: ${r.verdicts.every((v) => v.ok) ? 'all pass' : 'FAILED'}</h2><table>${verdictRows}</table>` : ''}
${throughput}
${ratio('vsReference', r.reference)}
${ratio('vsBare', r.bare)}
${latency}
${cpu}
<h2>Figures</h2>
<table><tr><th>scenario</th><th>what</th><th>req/s (median)</th><th>p50 ms</th><th>p99 ms</th><th>× ${esc(r.reference)}</th><th>× ${esc(r.bare)}</th><th>best rounds × ${esc(r.reference)}</th><th>best × ${esc(r.bare)}</th><th>paired × ${esc(r.reference)}</th><th>paired × ${esc(r.bare)}</th><th>CPU µs/req</th><th>errors</th><th>non-2xx</th></tr>
${table}</table>
</body></html>
`;
}

// `node dist/bench/report.js results.json [out.html]` draws a chart of a results file written earlier.
if (require.main === module) {
  const [input, output = input.replace(/\.json$/, '') + '.html'] = process.argv.slice(2);
  if (!input) {
    process.stderr.write('usage: node dist/bench/report.js <results.json> [out.html]\n');
    process.exit(1);
  }
  writeFileSync(output, renderReport(JSON.parse(readFileSync(input, 'utf8')) as ReportInput));
  process.stdout.write(`chart written to ${output}\n`);
}
