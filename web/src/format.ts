// How the dashboard writes numbers: sizes in binary units, durations short
// (`4m 10s`), ages from a timestamp. Pure functions, shared by the tables and
// the charts' axes.

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function bytes(value: number): string {
  if (value < 0) return '-';
  let unit = 0;
  let scaled = value;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit++;
  }
  return `${unit === 0 ? scaled : scaled.toFixed(1)} ${units[unit]}`;
}

export function duration(seconds: number | null): string {
  if (seconds === null || seconds < 0) return '-';
  if (seconds < 60) return `${Math.round(seconds * 10) / 10}s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${whole % 60}s`;
  return `${Math.floor(whole / 3600)}h ${Math.floor((whole % 3600) / 60)}m`;
}

/** How long ago `iso` was, as a duration; '-' for none. */
export function age(iso: string | null, now: number): string {
  if (iso === null) return '-';
  return `${duration(Math.max(0, (now - Date.parse(iso)) / 1000))} ago`;
}
