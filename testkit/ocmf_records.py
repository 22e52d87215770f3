"""Signed OCMF records for the evidence tests: real ones with their published keys, and the
specification's example.

Real records come from public test data of the S.A.F.E. e.V. transparency software
(github.com/SAFE-eV/transparenzsoftware, Apache-2.0) and from the OCMF specification
(github.com/SAFE-eV/OCMF-Open-Charge-Metering-Format, OCMF-en.md); each constant names its file.
"""

from __future__ import annotations

import json

# SAFE-eV/transparenzsoftware src/test/resources/xml/test_ocmf_keba_kcp30.xml (no SA: default P-256)
KEBA = (
    'OCMF|{"FV":"1.0","GI":"KEBA_KCP30","GS":"17619300","GV":"2.8.5","PG":"T32","IS":false,'
    '"IL":"NONE","IF":["RFID_NONE","OCPP_NONE","ISO15118_NONE","PLMN_NONE"],"IT":"NONE","ID":"",'
    '"RD":[{"TM":"2019-08-13T10:03:15,000+0000 I","TX":"B","EF":"","ST":"G","RV":0.2596,'
    '"RI":"1-b:1.8.0","RU":"kWh"},{"TM":"2019-08-13T10:03:36,000+0000 R","TX":"E","EF":"",'
    '"ST":"G","RV":0.2597,"RI":"1-b:1.8.0","RU":"kWh"}]}|{"SD":"304502200E2F107C987A300AC1695C'
    "A89EA149A8CDFA16188AF0A33EE64B67964AA943F9022100889A72B6D65364BEA8562E7F6A0253157ACFF84FE4"
    '929A93B5964D23C4265699"}'
)
KEBA_KEY = (
    "3059301306072A8648CE3D020106082A8648CE3D030107034200043AEEB45C392357820A58FDFB0857BD77ADA3"
    "1585C61C430531DFA53B440AFBFDD95AC887C658EA55260F808F55CA948DF235C2108A0D6DC7D4AB1A5E1A7955BE"
)
# Same repository, test_ocmf_keba_kcp30_fail.xml: the begin time was altered after signing.
KEBA_TAMPERED = KEBA.replace("2019-08-13T10:03:15", "2019-08-12T10:03:15")

# SAFE-eV/transparenzsoftware src/test/resources/xml/brainpoolP256r1.xml
NZR_BRAINPOOL = (
    'OCMF|{"FV":"1.0","GI":"NZR GATEWAY","GS":"21751020","GV":"1.0.0.0","PG":"T274","MV":"NZR",'
    '"MM":"EcoCount SL","MS":"12345678","MF":"1.11","IS":false,"IL":"NONE","IF":[],"IT":"NONE",'
    '"ID":"","CT":"","CI":"","RD":[{"TM":"2021-10-26T11:15:09,000+0000 S","TX":"B","RV":1833,'
    '"RI":"1-0:1.8.1","RU":"Wh","RT":"AC","EF":"","ST":"G"}]}|{"SD":"304402202CC410E10CD914139'
    "4AE77B3DC17A523C359F65B0117C098703DF1F2AB773A3302204C6CC011FE4920F87CF413F6FB94EDD78DAA26"
    'BB5DB4048DA9B3D3AB513CC23C","SA":"ECDSA-brainpoolP256r1-SHA256"}'
)
NZR_BRAINPOOL_KEY = (
    "305A301406072A8648CE3D020106092B240303020801010703420004607201339EF7C61EB1270C0BEA6755857"
    "11CB160835F0F55975A311EA6F14AE98981A9276ABC6C70ADA4F8CE25A5502336C738B9E86FB1ED62150FF1B0FAD5A2"
)

# SAFE-eV/transparenzsoftware src/test/resources/xml/nistP384_0Wh.xml
NZR_P384 = (
    'OCMF|{"FV":"1.0","GI":"NZR GATEWAY","GS":"21751020","GV":"1.0.0.0","PG":"T5","MV":"NZR",'
    '"MM":"EcoCount SL","MS":"12345678","MF":"1.11","IS":false,"IL":"NONE","IF":[],"IT":"NONE",'
    '"ID":"","CT":"","CI":"","RD":[{"TM":"2021-10-26T12:24:56,000+0000 S","TX":"B","RV":0,'
    '"RI":"1-0:1.8.1","RU":"Wh","RT":"AC","EF":"","ST":"G"}]}|{"SD":"306502305E1ACEB5DFFC89FC9'
    "233D323851CC6D4F95D48721949D3F984C9A6FA25C68655B365E3D22447B3F1A44AB4DE5EDA9AE90231008AFC"
    "7C199CA9A015DE46F8DF6D1D8F7F7A172282EE4159D4136D102E07F198660D5717E9681CF5842EA636FCAB7CB"
    'B0D","SA":"ECDSA-secp384r1-SHA256"}'
)
NZR_P384_KEY = (
    "3076301006072A8648CE3D020106052B81040022036200047991E23A9815893FF8D3C9EF47D682B39297FA3C4"
    "7DA345EF3D150245814120F48AD31C51536341B80E679C3138E316ADB9F39BCB42E8CE28D4C824844B4C6B16E"
    "48F056FD803EC7F3CD1B6BA1BCA125DA5E211842D5FB61F01BAA3DE9B2F10C"
)

# SAFE-eV/transparenzsoftware src/test/resources/test.xml: an eBZ meter signing on secp192r1.
# The T120 record writes its signature integers at a fixed width, so `r` lacks the leading zero
# strict DER needs; the transparency software accepts it, and so must we.
EBZ_T117 = (
    'OCMF|{"FV":"1.0","GI":"eBZ LD3","GS":"1EBZ0300034628","GV":"V207","MS":"1EBZ0300034628",'
    '"PG":"T117","IS":true,"IL":"TRUSTED","IT":"EMAID","ID":"DKV_Testbox2","CI":"Dies",'
    '"CT":"EVSEID","RD":[{"TM":"2022-10-27T19:15:20,000+0200 I","TX":"B","RV":2850685,'
    '"RI":"1-b:1.8.e","RU":"Wh","ST":"G"},{"TM":"2022-10-27T19:20:06,000+0200 I","TX":"E",'
    '"RV":2850951,"RI":"1-b:1.8.e","RU":"Wh","ST":"G"}]}|{"SA":"ECDSA-secp192r1-SHA256",'
    '"SD":"303402184b322dbd3e5fcf5d4d0d2334052080ea6791c7126839237f021879989dcbf73069c5abebea76'
    'bd9268ccff2c56edb8faf409"}'
)
EBZ_T120 = (
    'OCMF|{"FV":"1.0","GI":"eBZ LD3","GS":"1EBZ0300034628","GV":"V207","MS":"1EBZ0300034628",'
    '"PG":"T120","IS":true,"IL":"TRUSTED","IT":"EMAID","ID":"DKV_Testbox2","CI":"Dies",'
    '"CT":"EVSEID","RD":[{"TM":"2022-10-27T19:38:50,000+0200 I","TX":"B","RV":2851485,'
    '"RI":"1-b:1.8.e","RU":"Wh","ST":"G"},{"TM":"2022-10-27T19:43:38,000+0200 I","TX":"E",'
    '"RV":2851753,"RI":"1-b:1.8.e","RU":"Wh","ST":"G"}]}|{"SA":"ECDSA-secp192r1-SHA256",'
    '"SD":"30340218e10a077929f593717affdff69a5df0d2862989a6638f873d0218007d21b1c0255c5b24a3c5a0'
    '1d600839ebae2bb67bcb1159"}'
)
EBZ_KEY = (
    "3049301306072a8648ce3d020106082a8648ce3d030101033200041e155ef46fbcc56005769c08d792127c006c"
    "242ccccd96bf7051b6fbc278497036659e7bae57f542776a17c7f8b28600"
)

# SAFE-eV/transparenzsoftware src/test/resources/xml/test_ocmf_ebee_01.xml (key as spaced hex)
DZG_EBEE = (
    'OCMF|{"FV":"1.0","GI":"Heinz_CSA","GS":"","GV":"1.6.0","PG":"T28","MV":"DZG","MM":"DVH4013",'
    '"MS":"000033022620","MF":"","IS":true,"IT":"ISO14443","ID":"7bcf78ad","RD":[{"TM":'
    '"2021-08-25T10:01:04,000+0200 I","TX":"B","RV":7753,"RI":"1-b:1.8.0","RU":"Wh","RT":"AC",'
    '"EF":"","ST":"G"}]}|{"SD":"3045022100AA010A609E2A6D5E5DAC54CB469FA4A430BFBADC0CDF5F82F5291A'
    '6C9CEACE9B022052E7ECC79DEF081C303703ABC67C07C4CFA842AF6EE21B12C1263C21E80D92FF"}'
)
DZG_EBEE_KEY = (
    "3059 3013 0607 2A86 48CE 3D02 0106 082A 8648 CE3D 0301 0703 4200 04E5 CE28 01D7 16BF 55B7 "
    "1477 CA66 6BE6 A8B8 994F EBBF 05B0 4BC0 AE78 79A6 2AE7 7460 A143 35F3 F306 57DD 7ADC 4338 "
    "398C 837D D2DE 52D8 FCAA E786 01D1 476F E1C2 1F"
)

# SAFE-eV/transparenzsoftware src/test/resources/xml/OCMF_Test_Data_00.xml: secp256k1, spaces
# around colons, values as padded strings, base64 key.
NANO_K1 = (
    'OCMF|{"FV" : "1.0","GI" : "Nano CH-10311C","GS" : "060643","GV" : "v017","PG" : "T198",'
    '"MV" : "DZG","MM" : "DVH4013","MS" : "1DZG0033016824","IS" : true,"IL" : "VERIFIED",'
    '"IF" : ["RFID_NONE","OCPP_NONE","ISO15118_NONE","PLMN_NONE"],"IT" : "EMAID",'
    '"ID" : "04ab076a345b85","CT" : "CBIDC","CI" : "CI","RD" : [{"TM" : '
    '"2021-10-26T10:20:52,000+0200 I","TX" : "B","RV" : "       9.038","RI" : '
    '"01-00:01.08.00.FF","RU" : "kWh","RT" : "AC","EF" : "","ST" : "G"}]}|{"SA" : '
    '"ECDSA-secp256k1-SHA256","SD" : "3046022100A4C188533ECA1793336520F7F99E010E62DEC32ABD344A5'
    '62B00D396F65DFFE9022100CB0FB3782E406525641D689F4326D2118365A722EE75AAAB976C14B090BE49DA"}'
)
NANO_K1_KEY = (
    "MFYwEAYHKoZIzj0CAQYFK4EEAAoDQgAEqHEykfqZhspgok6zCQh/329B38xine8ujzT8p5Nh7lek47cYeZj507aN6E4/"
    "QirF1b7Q57ln4VGfK6h0d0GOQA=="
)

# SAFE-eV/transparenzsoftware src/test/resources/xml/chargepoint_3.xml: base64 signature (SE),
# "FV" as a number, "CT" as a number, readings as strings.
TWIN = (
    'OCMF|{"FV": 1.0, "GI": "TwinCharger Pro 2.1.0", "GS": "TC_00010", "GV": "0.5.15-1", "PG": '
    '"T2", "MV": "DZG", "MM": "DVH4013", "MS": "33019230", "CT": 0, "CI": "DE*EBW*EP006120*1", '
    '"UCPN": "101", "RD": [{"TM": "2021-04-09T09:09:51,000+0200 I", "TX": "B", "RV": "0.0", '
    '"RI": "1-0:1.8.0", "RU": "kWh", "RT": "AC", "EF": "", "ST": "G"}, {"TM": '
    '"2021-04-09T09:21:30,000+0200 I", "TX": "E", "RV": "1.304", "RI": "1-0:1.8.0", "RU": "kWh", '
    '"RT": "AC", "EF": "", "ST": "G"}], "IS": true, "IL": "HEARSAY", "IT": "ISO14443", "ID": '
    '"ad228beb"}|{"SD":"MEUCIQCW6ui2zIeCPLfElYuJoT0HJBmx7JTauGrWEAb+5l3LmAIgN4Q9vTm86z0rRJFF3p+'
    'gHnXp7YmRbJiuUrp61a+vHB4=","SA":"ECDSA-secp256r1-SHA256","SE":"base64"}'
)
TWIN_KEY = (
    "3059301306072a8648ce3d020106082a8648ce3d030107034200042c2646046965328e8db4700e78c19816f91a"
    "9a389f61aa9c5b3b87dae6cba7a277afafb163900031a1b507291f1c3d8d951bfd48b1edab4b406551a9c26ad12a"
)


def spec_example() -> str:
    """The example file of the OCMF specification (OCMF-en.md, "Example File"), pretty-printed
    there; its signature is a placeholder, so it only serves parsing."""
    payload = {
        "FV": "1.4",
        "GI": "ABL SBC-301",
        "GS": "808829900001",
        "GV": "1.4p3",
        "PG": "T12345",
        "MV": "Phoenix Contact",
        "MM": "EEM-350-D-MCB",
        "MS": "BQ27400330016",
        "MF": "1.0",
        "IS": True,
        "IL": "VERIFIED",
        "IF": ["RFID_PLAIN", "OCPP_RS_TLS"],
        "IT": "ISO14443",
        "ID": "1F2D3A4F5506C7",
        "TT": "Tarif 1",
        "LC": {"LN": "cable_name", "LI": 1, "LR": 2, "LU": "mOhm"},
    }
    readings = [
        ("2018-07-24T13:22:04,000+0200 S", "B", "2935.600", "01-0B:01.08.00*FF", None),
        ("2018-07-24T13:26:04,000+0200 S", "E", "2965.100", "01-0B:01.08.00*FF", "0.5"),
        ("2018-07-24T13:22:04,000+0200 S", "B", "2905.600", "01-0B:B1.08.00*FF", None),
        ("2018-07-24T13:26:04,000+0200 S", "E", "2934.600", "01-0B:B1.08.00*FF", None),
        ("2018-07-24T13:22:04,000+0200 S", "B", "0.000", "01-0B:B3.08.00*FF", None),
        ("2018-07-24T13:26:04,000+0200 S", "E", "29.000", "01-0B:B3.08.00*FF", None),
    ]
    rd = []
    for tm, tx, rv, ri, cl in readings:
        loss = f',\n"CL": {cl}' if cl else ""
        rd.append(
            f'{{\n"TM": "{tm}",\n"TX": "{tx}",\n"RV": {rv}{loss},\n"RI": "{ri}",\n"RU": "kWh",\n'
            f'"RT": "DC",\n"EF": "",\n"ST": "G"\n}}'
        )
    body = json.dumps(payload, indent=4)[:-2] + ',\n    "RD": [\n' + ",\n".join(rd) + "\n]\n}"
    return "OCMF|" + body + '|{\n    "SD": "' + "1234567890ABCDEF" * 6 + '"\n}'
