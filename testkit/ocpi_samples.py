"""OCPI 2.2.1 objects for the tests: the specification's examples, and CDRs carrying real signed
OCMF records.

`spec_cdr()` is the CDR example of the specification (ocpi/ocpi, branch release-2.2.1-bugfixes,
examples/cdr_example.json), unsigned. `signed_cdr()` is a CDR of the same CPO for a real signed
session: the TwinCharger record of `testkit.ocmf_records` (1.304 kWh, begin and end readings,
published key), with its times and energy; `keba_cdr()` one for the KEBA record (`tampered`:
the record altered after signing). `spec_session_started()` and `spec_session_finished()` are
the Session examples (examples/session_example_1_simple_start.json and _2_short_finished.json),
`credentials()` a platform's Credentials object as credentials_example.json has it. Every call
returns a fresh object to change at will.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from testkit.ocmf_records import KEBA, KEBA_KEY, KEBA_TAMPERED, TWIN, TWIN_KEY

_SPEC_CDR: dict[str, Any] = {
    "country_code": "BE",
    "party_id": "BEC",
    "id": "12345",
    "start_date_time": "2015-06-29T21:39:09Z",
    "end_date_time": "2015-06-29T23:37:32Z",
    "cdr_token": {
        "country_code": "DE",
        "party_id": "TNM",
        "uid": "012345678",
        "type": "RFID",
        "contract_id": "DE8ACC12E46L89",
    },
    "auth_method": "WHITELIST",
    "cdr_location": {
        "id": "LOC1",
        "name": "Gent Zuid",
        "address": "F.Rooseveltlaan 3A",
        "city": "Gent",
        "postal_code": "9000",
        "country": "BEL",
        "coordinates": {"latitude": "3.729944", "longitude": "51.047599"},
        "evse_uid": "3256",
        "evse_id": "BE*BEC*E041503003",
        "connector_id": "1",
        "connector_standard": "IEC_62196_T2",
        "connector_format": "SOCKET",
        "connector_power_type": "AC_1_PHASE",
    },
    "currency": "EUR",
    "tariffs": [
        {
            "country_code": "BE",
            "party_id": "BEC",
            "id": "12",
            "currency": "EUR",
            "elements": [
                {
                    "price_components": [
                        {"type": "TIME", "price": 2.00, "vat": 10.0, "step_size": 300}
                    ]
                }
            ],
            "last_updated": "2015-02-02T14:15:01Z",
        }
    ],
    "charging_periods": [
        {
            "start_date_time": "2015-06-29T21:39:09Z",
            "dimensions": [{"type": "TIME", "volume": 1.973}],
            "tariff_id": "12",
        }
    ],
    "total_cost": {"excl_vat": 4.00, "incl_vat": 4.40},
    "total_energy": 15.342,
    "total_time": 1.973,
    "total_time_cost": {"excl_vat": 4.00, "incl_vat": 4.40},
    "last_updated": "2015-06-29T22:01:13Z",
}

_SPEC_SESSION_STARTED: dict[str, Any] = {
    "country_code": "NL",
    "party_id": "STK",
    "id": "101",
    "start_date_time": "2020-03-09T10:17:09Z",
    "kwh": 0.0,
    "cdr_token": {
        "country_code": "NL",
        "party_id": "TST",
        "uid": "123abc",
        "type": "RFID",
        "contract_id": "NL-TST-C12345678-S",
    },
    "auth_method": "WHITELIST",
    "location_id": "LOC1",
    "evse_uid": "3256",
    "connector_id": "1",
    "currency": "EUR",
    "total_cost": {"excl_vat": 2.5},
    "status": "PENDING",
    "last_updated": "2020-03-09T10:17:09Z",
}

_SPEC_SESSION_FINISHED: dict[str, Any] = {
    "country_code": "BE",
    "party_id": "BEC",
    "id": "101",
    "start_date_time": "2015-06-29T22:39:09Z",
    "end_date_time": "2015-06-29T23:50:16Z",
    "kwh": 41.12,
    "cdr_token": {
        "country_code": "NL",
        "party_id": "TST",
        "uid": "123abc",
        "type": "RFID",
        "contract_id": "NL-TST-C12345678-S",
    },
    "auth_method": "WHITELIST",
    "location_id": "LOC1",
    "evse_uid": "3256",
    "connector_id": "1",
    "currency": "EUR",
    "charging_periods": [
        {
            "start_date_time": "2015-06-29T22:39:09Z",
            "dimensions": [
                {"type": "ENERGY", "volume": 120},
                {"type": "MAX_CURRENT", "volume": 30},
            ],
        },
        {
            "start_date_time": "2015-06-29T22:40:54Z",
            "dimensions": [
                {"type": "ENERGY", "volume": 41000},
                {"type": "MIN_CURRENT", "volume": 34},
            ],
        },
        {
            "start_date_time": "2015-06-29T23:07:09Z",
            "dimensions": [{"type": "PARKING_TIME", "volume": 0.718}],
            "tariff_id": "12",
        },
    ],
    "total_cost": {"excl_vat": 8.50, "incl_vat": 9.35},
    "status": "COMPLETED",
    "last_updated": "2015-06-29T23:50:17Z",
}


def spec_cdr(**fields: Any) -> dict[str, Any]:
    """The specification's CDR example; `fields` replace any of its own."""
    return copy.deepcopy(_SPEC_CDR) | fields


def spec_session_started() -> dict[str, Any]:
    return copy.deepcopy(_SPEC_SESSION_STARTED)


def spec_session_finished() -> dict[str, Any]:
    return copy.deepcopy(_SPEC_SESSION_FINISHED)


def base64_key(hex_der: str) -> str:
    """A public key given as hex DER (as the OCMF test data has it) the way OCPI carries one:
    base64."""
    return base64.b64encode(bytes.fromhex(hex_der.replace(" ", ""))).decode()


def signed_data(ocmf: str, key_hex: str | None, nature: str = "End") -> dict[str, Any]:
    """An OCPI SignedData of one OCMF record: the record in base64 as `signed_data`, as text as
    `plain_data`, with its key (base64) unless `key_hex` is None."""
    data: dict[str, Any] = {
        "encoding_method": "OCMF",
        "signed_values": [
            {
                "nature": nature,
                "plain_data": ocmf,
                "signed_data": base64.b64encode(ocmf.encode()).decode(),
            }
        ],
    }
    if key_hex is not None:
        data["public_key"] = base64_key(key_hex)
    return data


def _session_cdr(
    cdr_id: str, evse_uid: str, start: str, end: str, kwh: float, hours: float
) -> dict[str, Any]:
    cdr = spec_cdr(
        id=cdr_id,
        session_id=f"S-{cdr_id}",
        start_date_time=start,
        end_date_time=end,
        total_energy=kwh,
        total_time=hours,
        last_updated=end,
        charging_periods=[
            {
                "start_date_time": start,
                "dimensions": [
                    {"type": "ENERGY", "volume": kwh},
                    {"type": "TIME", "volume": hours},
                ],
            }
        ],
    )
    cdr["cdr_location"]["evse_uid"] = evse_uid
    del cdr["tariffs"]
    return cdr


def signed_cdr(cdr_id: str = "TWIN-2", *, with_key: bool = True) -> dict[str, Any]:
    """A CDR of the TwinCharger session of 2021-04-09: 1.304 kWh, signed (OCMF, P-256)."""
    cdr = _session_cdr(
        cdr_id, "TC_00010", "2021-04-09T07:09:51Z", "2021-04-09T07:21:30Z", 1.304, 0.1942
    )
    cdr["cdr_location"]["evse_id"] = "DE*EBW*EP006120*1"
    cdr["meter_id"] = "33019230"
    cdr["signed_data"] = signed_data(TWIN, TWIN_KEY if with_key else None)
    return cdr


def keba_cdr(cdr_id: str = "KEBA-1", *, tampered: bool = False) -> dict[str, Any]:
    """A CDR of the KEBA session of 2019-08-13 (0.0001 kWh), signed; `tampered`: its record
    was altered after signing (the signature no longer verifies)."""
    cdr = _session_cdr(
        cdr_id, "17619300", "2019-08-13T10:03:15Z", "2019-08-13T10:03:36Z", 0.0001, 0.0058
    )
    cdr["signed_data"] = signed_data(KEBA_TAMPERED if tampered else KEBA, KEBA_KEY)
    return cdr


def credentials(token: str, url: str, *roles: tuple[str, str, str]) -> dict[str, Any]:
    """A platform's Credentials object: `roles` as (role, country code, party id); by default
    the CPO of the specification's CDR example, BE/BEC."""
    return {
        "token": token,
        "url": url,
        "roles": [
            {
                "role": role,
                "party_id": party_id,
                "country_code": country_code,
                "business_details": {"name": f"Example {role} {country_code}/{party_id}"},
            }
            for role, country_code, party_id in roles or (("CPO", "BE", "BEC"),)
        ],
    }
