//! Built-in cloud region → Electricity Maps zone tables.
//!
//! Sources (the zone of each region is where its data centres draw power):
//!
//! - **GCP**: the region → zone mapper of `umassos/decarbonization-potential`
//!   (`shared_data/gcp_dc_zonecode_mapper.json`, Apache-2.0), with its
//!   outdated ids updated to current Electricity Maps ids (`AUS-NSW` →
//!   `AU-NSW`, `AUS-VIC` → `AU-VIC`, `IN-MH` → `IN-WE`, `IN-DL` → `IN-NO`)
//!   and `us-central1` (Council Bluffs, Iowa: MidAmerican, a MISO member) set
//!   to `US-MIDW-MISO`; regions opened since were added from Google's
//!   published region locations.
//! - **Azure**: Cloud Carbon Footprint's
//!   `AZURE_MAPPED_REGIONS_TO_ELECTRICITY_MAPS_ZONES`
//!   (`cloud-carbon-footprint/cloud-carbon-footprint`,
//!   `packages/azure/src/lib/AzureRegions.ts`, Apache-2.0, © Thoughtworks),
//!   with `westus2` (Quincy, Washington) set to `US-NW-BPAT`, `westus3`
//!   (Phoenix) to `US-SW-AZPS` (as `decarbonization-potential`'s
//!   `data_regions.csv` places Azure), `eastasia` to `HK`, and newer regions
//!   added from Microsoft's published region locations.
//! - **AWS**: each region's published location (as listed with Cloud Carbon
//!   Footprint's grid emission factors, `cloud-carbon-coefficients`,
//!   Apache-2.0) placed in the Electricity Maps zone covering it;
//!   `us-west-2` follows `decarbonization-potential`'s `data_regions.csv`
//!   (`US-NW-PACW`).
//!
//! Regions in grids Electricity Maps does not cover in real time (mainland
//! China) are left out on purpose: unknown is neutral, a wrong zone is not.
//! Every zone id is checked against Electricity Maps' zone list in the tests.

use super::CloudProvider;

/// AWS region → zone.
pub const AWS: &[(&str, &str)] = &[
    ("us-east-1", "US-MIDA-PJM"),     // N. Virginia
    ("us-east-2", "US-MIDA-PJM"),     // Ohio
    ("us-west-1", "US-CAL-CISO"),     // N. California
    ("us-west-2", "US-NW-PACW"),      // Oregon
    ("us-gov-east-1", "US-MIDA-PJM"), // Ohio
    ("us-gov-west-1", "US-NW-PACW"),  // Oregon
    ("ca-central-1", "CA-QC"),        // Montreal
    ("ca-west-1", "CA-AB"),           // Calgary
    ("mx-central-1", "MX-CE"),        // Querétaro
    ("sa-east-1", "BR-CS"),           // São Paulo
    ("eu-central-1", "DE"),           // Frankfurt
    ("eu-central-2", "CH"),           // Zurich
    ("eu-west-1", "IE"),              // Ireland
    ("eu-west-2", "GB"),              // London
    ("eu-west-3", "FR"),              // Paris
    ("eu-north-1", "SE-SE3"),         // Stockholm
    ("eu-south-1", "IT-NO"),          // Milan
    ("eu-south-2", "ES"),             // Aragón
    ("af-south-1", "ZA"),             // Cape Town
    ("il-central-1", "IL"),           // Tel Aviv
    ("me-south-1", "BH"),             // Bahrain
    ("me-central-1", "AE"),           // UAE
    ("ap-east-1", "HK"),              // Hong Kong
    ("ap-south-1", "IN-WE"),          // Mumbai
    ("ap-south-2", "IN-SO"),          // Hyderabad
    ("ap-northeast-1", "JP-TK"),      // Tokyo
    ("ap-northeast-2", "KR"),         // Seoul
    ("ap-northeast-3", "JP-KN"),      // Osaka
    ("ap-southeast-1", "SG"),         // Singapore
    ("ap-southeast-2", "AU-NSW"),     // Sydney
    ("ap-southeast-3", "ID"),         // Jakarta
    ("ap-southeast-4", "AU-VIC"),     // Melbourne
    ("ap-southeast-5", "MY-WM"),      // Malaysia
];

/// GCP region → zone.
pub const GCP: &[(&str, &str)] = &[
    ("asia-east1", "TW"),
    ("asia-east2", "HK"),
    ("asia-northeast1", "JP-TK"),
    ("asia-northeast2", "JP-KN"),
    ("asia-northeast3", "KR"),
    ("asia-south1", "IN-WE"),
    ("asia-south2", "IN-NO"),
    ("asia-southeast1", "SG"),
    ("asia-southeast2", "ID"),
    ("australia-southeast1", "AU-NSW"),
    ("australia-southeast2", "AU-VIC"),
    ("europe-central2", "PL"),
    ("europe-north1", "FI"),
    ("europe-southwest1", "ES"),
    ("europe-west1", "BE"),
    ("europe-west2", "GB"),
    ("europe-west3", "DE"),
    ("europe-west4", "NL"),
    ("europe-west6", "CH"),
    ("europe-west8", "IT-NO"),
    ("europe-west9", "FR"),
    ("europe-west10", "DE"),    // Berlin
    ("europe-west12", "IT-NO"), // Turin
    ("me-west1", "IL"),         // Tel Aviv
    ("me-central1", "QA"),      // Doha
    ("me-central2", "SA"),      // Dammam
    ("africa-south1", "ZA"),    // Johannesburg
    ("northamerica-northeast1", "CA-QC"),
    ("northamerica-northeast2", "CA-ON"),
    ("northamerica-south1", "MX-CE"), // Querétaro
    ("southamerica-east1", "BR-CS"),
    ("southamerica-west1", "CL-SEN"),
    ("us-central1", "US-MIDW-MISO"),
    ("us-east1", "US-CAR-SC"),
    ("us-east4", "US-MIDA-PJM"),
    ("us-east5", "US-MIDA-PJM"),
    ("us-south1", "US-TEX-ERCO"),
    ("us-west1", "US-NW-PACW"),
    ("us-west2", "US-CAL-CISO"),
    ("us-west3", "US-NW-PACE"),
    ("us-west4", "US-NW-NEVP"),
];

/// Azure region (lower case, no spaces) → zone.
pub const AZURE: &[(&str, &str)] = &[
    ("southafricanorth", "ZA"),
    ("southafricawest", "ZA"),
    ("australiacentral", "AU-NSW"),
    ("australiacentral2", "AU-NSW"),
    ("australiaeast", "AU-NSW"),
    ("australiasoutheast", "AU-VIC"),
    ("eastasia", "HK"),
    ("southeastasia", "SG"),
    ("japaneast", "JP-TK"),
    ("japanwest", "JP-KN"),
    ("koreacentral", "KR"),
    ("koreasouth", "KR"),
    ("centralindia", "IN-WE"),
    ("southindia", "IN-SO"),
    ("westindia", "IN-WE"),
    ("northeurope", "IE"),
    ("westeurope", "NL"),
    ("francecentral", "FR"),
    ("francesouth", "FR"),
    ("swedencentral", "SE-SE3"),
    ("switzerlandnorth", "CH"),
    ("switzerlandwest", "CH"),
    ("uksouth", "GB"),
    ("ukwest", "GB"),
    ("germanynorth", "DE"),
    ("germanywestcentral", "DE"),
    ("norwayeast", "NO-NO1"),
    ("norwaywest", "NO-NO2"),
    ("italynorth", "IT-NO"),
    ("polandcentral", "PL"),
    ("spaincentral", "ES"),
    ("israelcentral", "IL"),
    ("qatarcentral", "QA"),
    ("uaenorth", "AE"),
    ("canadacentral", "CA-ON"),
    ("canadaeast", "CA-QC"),
    ("centralus", "US-MIDW-MISO"),
    ("eastus", "US-MIDA-PJM"),
    ("eastus2", "US-MIDA-PJM"),
    ("northcentralus", "US-MIDW-MISO"),
    ("southcentralus", "US-TEX-ERCO"),
    ("westcentralus", "US-NW-PACE"),
    ("westus", "US-CAL-CISO"),
    ("westus2", "US-NW-BPAT"),
    ("westus3", "US-SW-AZPS"),
    ("mexicocentral", "MX-CE"),
    ("brazilsouth", "BR-CS"),
    ("brazilsoutheast", "BR-CS"),
];

/// The table of a provider.
pub const fn table(provider: CloudProvider) -> &'static [(&'static str, &'static str)] {
    match provider {
        CloudProvider::Aws => AWS,
        CloudProvider::Gcp => GCP,
        CloudProvider::Azure => AZURE,
    }
}

/// The zone of `region` in `provider`'s table. Case is ignored; Azure
/// regions may contain spaces (`West Europe`).
pub fn zone_for(provider: CloudProvider, region: &str) -> Option<&'static str> {
    let region = region.trim();
    table(provider)
        .iter()
        .find(|(r, _)| {
            if provider == CloudProvider::Azure {
                eq_ignoring_spaces(r, region)
            } else {
                r.eq_ignore_ascii_case(region)
            }
        })
        .map(|(_, z)| *z)
}

fn eq_ignoring_spaces(table: &str, region: &str) -> bool {
    let mut a = table.bytes();
    let mut b = region.bytes().filter(|c| !c.is_ascii_whitespace());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(&y) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use carbon_kube_model::ZoneId;

    use super::*;

    use crate::shared_data;

    /// Every zone in the tables is a real Electricity Maps zone (the `/v3/zones`
    /// response kept in the shared data) and canonical in our model.
    #[test]
    fn every_zone_is_an_electricity_maps_zone() {
        let path =
            shared_data().join("api_examples/electricitymaps_v3/aioelectricitymaps_zones.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let zones: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(zones.len() > 300, "zone list looks truncated");
        for provider in CloudProvider::ALL {
            let mut seen = BTreeSet::new();
            for (region, zone) in table(provider) {
                assert!(
                    zones.contains_key(*zone),
                    "{provider} {region}: {zone} is not an EM zone"
                );
                assert_eq!(ZoneId::parse(zone).unwrap().as_str(), *zone);
                assert!(seen.insert(*region), "{provider} {region} listed twice");
                assert_eq!(*region, region.to_ascii_lowercase());
            }
        }
    }

    /// The GCP table agrees with the published mapper it was derived from,
    /// except where the documented corrections apply.
    #[test]
    fn gcp_table_follows_its_source() {
        let path = shared_data()
            .join("cloud_regions/decarbonization_potential_gcp_dc_zonecode_mapper.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let source: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
        let renamed = BTreeMap::from([
            ("AUS-NSW", "AU-NSW"),
            ("AUS-VIC", "AU-VIC"),
            ("IN-MH", "IN-WE"),
            ("IN-DL", "IN-NO"),
        ]);
        let corrected = BTreeSet::from(["us-central1"]);
        for (region, zone) in &source {
            let ours = zone_for(CloudProvider::Gcp, region)
                .unwrap_or_else(|| panic!("GCP region {region} missing"));
            if corrected.contains(region.as_str()) {
                assert_ne!(ours, zone, "{region} correction is stale");
                continue;
            }
            let want = renamed.get(zone.as_str()).copied().unwrap_or(zone);
            assert_eq!(ours, want, "GCP {region}");
        }
    }

    /// Every region with a CCF grid factor has a zone (except mainland China).
    #[test]
    fn the_regions_cloud_carbon_footprint_knows_are_covered() {
        let dir = shared_data().join("carbon_intensity/annual_averages/ccf_grid_emissions_factors");
        for (file, provider) in [
            ("grid-emissions-factors-aws.csv", CloudProvider::Aws),
            ("grid-emissions-factors-gcp.csv", CloudProvider::Gcp),
            ("grid-emissions-factors-azure.csv", CloudProvider::Azure),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let mut count = 0;
            for line in text.lines().skip(1) {
                let region = line.split(',').next().unwrap().trim();
                if region.starts_with("cn-") || region.is_empty() {
                    continue;
                }
                // Azure rows use display names ("West Europe"); "East US 3"
                // is announced but not a public region yet.
                if region == "East US 3"
                    || region == "Finland Central"
                    || region == "Belgium Central"
                {
                    continue;
                }
                assert!(
                    zone_for(provider, region).is_some(),
                    "{provider} {region} has no zone"
                );
                count += 1;
            }
            assert!(count > 15, "{file}: only {count} regions read");
        }
    }

    #[test]
    fn lookups_ignore_case_and_azure_spaces() {
        assert_eq!(zone_for(CloudProvider::Azure, "West Europe"), Some("NL"));
        assert_eq!(zone_for(CloudProvider::Azure, "westeurope"), Some("NL"));
        assert_eq!(zone_for(CloudProvider::Aws, "EU-CENTRAL-1"), Some("DE"));
        assert_eq!(zone_for(CloudProvider::Aws, "westeurope"), None);
        assert_eq!(zone_for(CloudProvider::Azure, "west"), None);
    }
}
