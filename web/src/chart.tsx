// One uPlot time chart: made once when the element mounts, fed new columns on
// each render, resized with its box. `data-max` on the element is the largest
// value drawn, for a person's tooltip and for the browser test to read.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { Column } from './series.js';

export interface ChartProps {
  id: string;
  title: string;
  times: number[];
  series: Array<{ label: string; values: Column }>;
  format: (value: number) => string;
}

const colors = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2'];
const height = 160;

function options(props: ChartProps, width: number): uPlot.Options {
  return {
    width,
    height,
    legend: { show: true },
    scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max)] } },
    axes: [{}, { size: 70, values: (_u, ticks) => ticks.map((t) => props.format(t)) }],
    series: [{}, ...props.series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length]!, width: 1.5, spanGaps: true, value: (_u: uPlot, v: number | null) => (v === null ? '-' : props.format(v)) }))],
  };
}

export function Chart(props: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = props.series.map((s) => s.label).join('\n');
  const data: uPlot.AlignedData = [props.times, ...props.series.map((s) => s.values)];
  useEffect(() => {
    const element = box.current!;
    plot.current = new uPlot(options(props, element.clientWidth || 400), data, element);
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: element.clientWidth, height }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // A new set of series (a group came or went) makes a new chart; new values only setData.
  }, [shape]);
  useEffect(() => plot.current?.setData(data), [data]);
  const max = Math.max(0, ...props.series.flatMap((s) => s.values.filter((v): v is number => v !== null)));
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      <div ref={box} data-testid={`chart-${props.id}`} data-max={String(max)} data-points={String(props.times.length)} />
    </figure>
  );
}
