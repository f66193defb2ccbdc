"""The carbon difference between the deployment defaults' grid zones, from
the public data in ../shared/data (never copied into the repository).

    python3 hack/iac/region_carbon.py [--data DIR] [ZONE_A ZONE_B]

Default: GB (AWS eu-west-2, CarbonKubeStack-Primary) and DE (eu-central-1,
CarbonKubeStack-Secondary). Prints, per year of Electricity Maps hourly data
present for both zones: the annual means (direct and life-cycle), the share of
hours in which A is cleaner, and what always running in the cleaner zone of
each hour would give (the bound of spatial shifting between the two
clusters); then the Electricity Maps yearly (life-cycle) values of co2.js for
each zone. docs/deploy.md quotes its output.
"""

import argparse
import csv
import json
import os
from pathlib import Path

DIRECT = "Carbon Intensity gCO\u2082eq/kWh (direct)"
LCA = "Carbon Intensity gCO\u2082eq/kWh (LCA)"


def hourly(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {r["Datetime (UTC)"]: (float(r[DIRECT]), float(r[LCA])) for r in rows}


def main():
    default_data = os.environ.get("CARBON_KUBE_SHARED_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=default_data)
    ap.add_argument("zones", nargs="*", default=["GB", "DE"])
    args = ap.parse_args()
    a, b = args.zones if len(args.zones) == 2 else ap.error("give two zones")
    ci = Path(args.data) / "carbon_intensity"

    print(f"{a} vs {b}, Electricity Maps hourly (gCO2eq/kWh)")
    for year in range(2020, 2030):
        pa, pb = ci / "electricitymaps_hourly" / f"{a}_{year}_hourly.csv", ci / "electricitymaps_hourly" / f"{b}_{year}_hourly.csv"
        if not (pa.exists() and pb.exists()):
            continue
        ha, hb = hourly(pa), hourly(pb)
        hours = sorted(ha.keys() & hb.keys())
        n = len(hours)
        for i, kind in ((0, "direct"), (1, "LCA")):
            ma = sum(ha[h][i] for h in hours) / n
            mb = sum(hb[h][i] for h in hours) / n
            best = sum(min(ha[h][i], hb[h][i]) for h in hours) / n
            cleaner = sum(ha[h][i] < hb[h][i] for h in hours) / n
            print(f"  {year} {kind:6} {a} {ma:6.1f}  {b} {mb:6.1f}  {b}-{a} {mb - ma:+6.1f} ({(mb - ma) / mb:+.0%} of {b})"
                  f"  {a} cleaner in {cleaner:.0%} of {n} h  cleaner-of-each-hour {best:6.1f}"
                  f" ({(best - ma) / ma:+.0%} vs always {a}, {(best - mb) / mb:+.0%} vs always {b})")

    print(f"{a} vs {b}, Electricity Maps yearly (co2.js, life-cycle, gCO2eq/kWh)")
    for f in sorted((ci / "annual_averages" / "co2js_electricitymaps_yearly").glob("yearly_*.json")):
        d = json.loads(f.read_text())
        va, vb = (d.get(z, {}).get("carbonIntensity", {}).get("value") for z in (a, b))
        print(f"  {f.stem[7:]}  {a} {va}  {b} {vb}" + (f"  {b}-{a} {vb - va:+d}" if va is not None and vb is not None else ""))


if __name__ == "__main__":
    main()
