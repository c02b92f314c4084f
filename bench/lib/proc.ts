/**
 * CPU accounting from /proc (Linux): per-process utime+stime of another process (the proxy
 * child, Prosody), this process's own usage, and machine-wide busy time, so every benchmark
 * phase can be charged per message.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

let clkTck: number | undefined;

/** Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`, 100 on Linux). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/**
 * utime+stime of a process in microseconds (resolution 1/CLK_TCK s, i.e. 10 ms).
 * Returns NaN when the process is gone.
 */
export function processCpuMicros(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return NaN;
  }
  // Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
  // What follows is field 3 (state) onwards; utime and stime are fields 14 and 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(rest[11]) + Number(rest[12]);
  return (ticks * 1e6) / clockTicks();
}

/** Read and write system calls made so far by a process (/proc/PID/io syscr, syscw). */
export interface SyscallCounts {
  reads: number;
  writes: number;
}

export function processSyscalls(pid: number | undefined): SyscallCounts {
  if (pid === undefined) return { reads: NaN, writes: NaN };
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const get = (k: string): number => Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(io)?.[1] ?? NaN);
    return { reads: get('syscr'), writes: get('syscw') };
  } catch {
    return { reads: NaN, writes: NaN };
  }
}

/** This process's own CPU (all threads), in microseconds, at µs resolution. */
export function selfCpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** Machine-wide CPU time from /proc/stat, in ticks: busy (not idle/iowait) and total. */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** A snapshot of every counter a phase is charged with. */
export interface CpuSnapshot {
  at: number;
  proxy: number;
  prosody: number;
  bench: number;
  machine: { busy: number; total: number };
  proxyIo: SyscallCounts;
  prosodyIo: SyscallCounts;
}

export function cpuSnapshot(proxyPid: number | undefined, prosodyPid: number | undefined): CpuSnapshot {
  return {
    at: performance.now(),
    proxy: processCpuMicros(proxyPid),
    prosody: processCpuMicros(prosodyPid),
    bench: selfCpuMicros(),
    machine: machineTicks(),
    proxyIo: processSyscalls(proxyPid),
    prosodyIo: processSyscalls(prosodyPid),
  };
}

/** CPU used between two snapshots: microseconds per process, machine busy fraction (0..1 of all cores). */
export interface CpuDelta {
  wallMs: number;
  proxyUs: number;
  prosodyUs: number;
  benchUs: number;
  /** Busy share of the whole machine (all cores), 0..1. */
  machineBusy: number;
  /** CPU used by everything else on the machine (other processes, kernel threads), in µs. */
  otherUs: number;
  /** Read/write system calls made by the proxy and by Prosody. */
  proxyIo: SyscallCounts;
  prosodyIo: SyscallCounts;
}

export function cpuDelta(a: CpuSnapshot, b: CpuSnapshot): CpuDelta {
  const total = b.machine.total - a.machine.total;
  const busyUs = ((b.machine.busy - a.machine.busy) * 1e6) / clockTicks();
  const proxyUs = b.proxy - a.proxy;
  const prosodyUs = b.prosody - a.prosody;
  const benchUs = b.bench - a.bench;
  return {
    wallMs: b.at - a.at,
    proxyUs,
    prosodyUs,
    benchUs,
    machineBusy: total > 0 ? (b.machine.busy - a.machine.busy) / total : NaN,
    otherUs: Math.max(0, busyUs - (Number.isFinite(proxyUs) ? proxyUs : 0) - prosodyUs - benchUs),
    proxyIo: { reads: b.proxyIo.reads - a.proxyIo.reads, writes: b.proxyIo.writes - a.proxyIo.writes },
    prosodyIo: { reads: b.prosodyIo.reads - a.prosodyIo.reads, writes: b.prosodyIo.writes - a.prosodyIo.writes },
  };
}
