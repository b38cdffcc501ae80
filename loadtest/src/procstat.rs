//! CPU time of the server's processes, from `/proc/PID/stat`.
//!
//! agentry is the process loadtest started (or, with --base-url, every
//! process whose comm is `agentry`); PostgreSQL is every `postgres` process
//! plus what the postmaster has collected from backends that exited
//! (`cutime`/`cstime`), so connections opened and closed during the window are
//! counted too; Redis is every `redis-server`. Times are in clock ticks
//! (`sysconf(_SC_CLK_TCK)`, 100 on Linux).

use std::fs;

/// The fields of `/proc/PID/stat` this module needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

/// Parses one `/proc/PID/stat` line. The comm (field 2) is in parentheses and
/// may itself contain spaces and parentheses, so it ends at the *last* `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = line[..open].trim().parse().ok()?;
    let comm = line[open + 1..close].to_owned();
    // After the comm: state (field 3), ppid (4), … utime (14), stime (15), cutime (16), cstime (17).
    let fields: Vec<&str> = line[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcStat {
        pid,
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// Every process readable now (processes that vanish while being read are skipped).
pub fn scan() -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|line| parse_stat(&line))
        .collect()
}

/// Which agentry processes to count.
#[derive(Clone, Debug)]
pub enum AgentryProcesses {
    /// The one loadtest started.
    Pid(u32),
    /// The instances of a cluster loadtest started.
    Pids(Vec<u32>),
    /// Every process named `agentry` (a server started by someone else).
    ByName,
}

/// CPU ticks of the three parties at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub agentry: u64,
    pub postgres: u64,
    pub redis: u64,
}

impl CpuTicks {
    pub fn of(processes: &[ProcStat], agentry: &AgentryProcesses) -> Self {
        let mut ticks = Self::default();
        for p in processes {
            let own = p.utime + p.stime;
            match p.comm.as_str() {
                "postgres" => {
                    ticks.postgres += own;
                    let parent_is_postgres = processes
                        .iter()
                        .any(|q| q.pid == p.ppid && q.comm == "postgres");
                    if !parent_is_postgres {
                        // The postmaster: its children's time once they have exited.
                        ticks.postgres += p.cutime + p.cstime;
                    }
                }
                "redis-server" => ticks.redis += own,
                _ => {}
            }
            let is_agentry = match agentry {
                AgentryProcesses::Pid(pid) => p.pid == *pid,
                AgentryProcesses::Pids(pids) => pids.contains(&p.pid),
                AgentryProcesses::ByName => p.comm == "agentry",
            };
            if is_agentry {
                ticks.agentry += own;
            }
        }
        ticks
    }

    pub fn now(agentry: &AgentryProcesses) -> Self {
        Self::of(&scan(), agentry)
    }

    /// Ticks spent between `earlier` and `self` (0 where a count went down,
    /// e.g. a process exited and took its time with it).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            agentry: self.agentry.saturating_sub(earlier.agentry),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            redis: self.redis.saturating_sub(earlier.redis),
        }
    }
}

/// Clock ticks per second, from `sysconf(_SC_CLK_TCK)` (100 if it fails).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pid: u32, comm: &str, ppid: u32, times: [u64; 4]) -> String {
        let [u, s, cu, cs] = times;
        format!("{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 {u} {s} {cu} {cs} 20 0 1 0 100 1000 10 18446744073709551615")
    }

    #[test]
    fn stat_lines_parse_even_with_awkward_comms() {
        let stat = parse_stat(&line(42, "agentry", 1, [150, 30, 7, 2])).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 42,
                comm: "agentry".into(),
                ppid: 1,
                utime: 150,
                stime: 30,
                cutime: 7,
                cstime: 2,
            }
        );
        let odd = parse_stat(&line(7, "a) (b c) ", 3, [1, 2, 3, 4])).unwrap();
        assert_eq!(odd.comm, "a) (b c) ");
        assert_eq!(odd.ppid, 3);
        assert_eq!((odd.utime, odd.cstime), (1, 4));
        assert!(parse_stat("12 (short) S 1 2").is_none());
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn the_process_table_of_this_machine_reads() {
        let me = std::process::id();
        assert!(scan().iter().any(|p| p.pid == me));
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn ticks_add_up_per_party() {
        let processes: Vec<ProcStat> = [
            line(10, "postgres", 1, [100, 50, 400, 100]), // the postmaster
            line(11, "postgres", 10, [20, 10, 999, 999]), // a backend: its children do not count
            line(20, "redis-server", 1, [30, 5, 0, 0]),
            line(30, "agentry", 1, [200, 100, 0, 0]),
            line(31, "agentry", 1, [1, 1, 0, 0]),
            line(40, "bash", 1, [9, 9, 9, 9]),
        ]
        .iter()
        .map(|l| parse_stat(l).unwrap())
        .collect();
        let by_pid = CpuTicks::of(&processes, &AgentryProcesses::Pid(30));
        assert_eq!(
            by_pid,
            CpuTicks {
                agentry: 300,
                postgres: 150 + 500 + 30,
                redis: 35
            }
        );
        assert_eq!(
            CpuTicks::of(&processes, &AgentryProcesses::ByName).agentry,
            302
        );
        let later = CpuTicks {
            agentry: 310,
            postgres: 600,
            redis: 40,
        };
        assert_eq!(
            later.since(&by_pid),
            CpuTicks {
                agentry: 10,
                postgres: 0,
                redis: 5
            }
        );
    }
}
