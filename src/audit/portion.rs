//! Rolling audits: `--portion n/m` audits the n-th of m deterministic shares of the sets, so
//! that running n = 1..m covers every set exactly once. Calendar forms pick n from today:
//! `daily/week` (n = weekday, m = 7) and `daily/month` (n = day of month, m = days in it).

use std::str::FromStr;

use crate::hashing::sha256_hex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Portion {
    pub n: u32,
    pub m: u32,
}

impl FromStr for Portion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let today = jiff::ZonedDateTime::now();
        match s {
            "daily/week" => {
                return Ok(Portion {
                    n: today.weekday().to_monday_one_offset() as u32,
                    m: 7,
                });
            }
            "daily/month" => {
                return Ok(Portion {
                    n: today.day() as u32,
                    m: today.days_in_month() as u32,
                });
            }
            _ => {}
        }
        let bad =
            || format!("{s:?}: use n/m with 1 <= n <= m (e.g. 2/7), daily/week or daily/month");
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (n.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if n == 0 || m == 0 || n > m {
            return Err(bad());
        }
        Ok(Portion { n, m })
    }
}

impl Portion {
    /// Whether the set of this name belongs to this share (stable across runs and machines).
    pub fn includes(&self, set_name: &str) -> bool {
        let h = sha256_hex(set_name.as_bytes());
        let bucket = u64::from_str_radix(&h[..15], 16).unwrap_or(0) % u64::from(self.m);
        bucket == u64::from(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_set_exactly_once() {
        let names: Vec<String> = (0..200)
            .map(|i| format!("docs_FULL_2026-01-01_{i:06}"))
            .collect();
        for name in &names {
            let hits = (1..=7)
                .filter(|n| Portion { n: *n, m: 7 }.includes(name))
                .count();
            assert_eq!(hits, 1);
        }
        assert!("0/3".parse::<Portion>().is_err());
        assert!("4/3".parse::<Portion>().is_err());
        assert_eq!("2/3".parse::<Portion>().unwrap(), Portion { n: 2, m: 3 });
        assert!("daily/month".parse::<Portion>().is_ok());
    }
}
