"""Names and tags of the TCA eUICC Profile Package (PEDefinitions, AUTOMATIC TAGS).

With automatic tagging a component's tag is its position: ProfileElement alternative n is the
context tag [n]; in a PE SEQUENCE the k-th component is [k]. Lists here follow the module's order
exactly (versions 2.1 to 3.3.1 only ever appended), so a name is its tag number.
"""

from __future__ import annotations

from rsp.aka import DEFAULT_CONSTANTS as DEFAULT_MILENAGE_CONSTANTS

# ProfileElement CHOICE alternatives in module order: index = context tag number.
PE_KINDS: tuple[str, ...] = (
    "header", "genericFileManagement", "pinCodes", "pukCodes", "akaParameter", "cdmaParameter",
    "securityDomain", "rfm", "application", "nonStandard", "end",
    "rfu1", "rfu2", "rfu3", "rfu4", "rfu5",
    "mf", "cd", "telecom", "usim", "opt-usim", "isim", "opt-isim", "phonebook", "gsm-access",
    "csim", "opt-csim", "eap", "df-5gs", "df-saip", "df-snpn", "df-5gprose", "iot", "opt-iot",
)  # fmt: skip
PE_TAG_NUMBERS = {name: number for number, name in enumerate(PE_KINDS)}


def _fields(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Components of the template-based file system PEs; [0] is the PEHeader, [1] the templateID.
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "mf": _fields("mf-header templateID mf ef-pl ef-iccid ef-dir ef-arr ef-umpc"),
    "cd": _fields("cd-header templateID df-cd ef-launchpad ef-icon"),
    "telecom": _fields(
        "telecom-header templateID df-telecom ef-arr ef-rma ef-sume ef-ice-dn ef-ice-ff ef-psismsc "
        "df-graphics ef-img ef-iidf ef-ice-graphics ef-launch-scws ef-icon "
        "df-phonebook ef-pbr ef-ext1 ef-aas ef-gas ef-psc ef-cc ef-puid ef-iap ef-adn ef-pbc ef-anr "
        "ef-puri ef-email ef-sne ef-uid ef-grp ef-ccp1 "
        "df-multimedia ef-mml ef-mmdf df-mmss ef-mlpl ef-mspl ef-mmssmode "
        "df-mcs ef-mst ef-mcs-config df-v2x ef-vst ef-v2x-config ef-v2xp-pc5 ef-v2xp-Uu"
    ),
    "usim": _fields(
        "usim-header templateID adf-usim ef-imsi ef-arr ef-keys ef-keysPS ef-hpplmn ef-ust ef-fdn "
        "ef-sms ef-smsp ef-smss ef-spn ef-est ef-start-hfn ef-threshold ef-psloci ef-acc ef-fplmn "
        "ef-loci ef-ad ef-ecc ef-netpar ef-epsloci ef-epsnsc"
    ),
    "opt-usim": _fields(
        "optusim-header templateID ef-li ef-acmax ef-acm ef-gid1 ef-gid2 ef-msisdn ef-puct ef-cbmi "
        "ef-cbmid ef-sdn ef-ext2 ef-ext3 ef-cbmir ef-plmnwact ef-oplmnwact ef-hplmnwact ef-dck "
        "ef-cnl ef-smsr ef-bdn ef-ext5 ef-ccp2 ef-ext4 ef-acl ef-cmi ef-ici ef-oci ef-ict ef-oct "
        "ef-vgcs ef-vgcss ef-vbs ef-vbss ef-emlpp ef-aaem ef-hiddenkey ef-pnn ef-opl ef-mbdn "
        "ef-ext6 ef-mbi ef-mwis ef-cfis ef-ext7 ef-spdi ef-mmsn ef-ext8 ef-mmsicp ef-mmsup "
        "ef-mmsucp ef-nia ef-vgcsca ef-vbsca ef-gbabp ef-msk ef-muk ef-ehplmn ef-gbanl ef-ehplmnpi "
        "ef-lrplmnsi ef-nafkca ef-spni ef-pnni ef-ncp-ip ef-ufc ef-nasconfig ef-uicciari ef-pws "
        "ef-fdnuri ef-bdnuri ef-sdnuri ef-ial ef-ips ef-ipd ef-epdgid ef-epdgselection "
        "ef-epdgidem ef-epdgselectionem ef-frompreferred ef-imsconfigdata ef-3gpppsdataoff "
        "ef-3gpppsdataoffservicelist ef-xcapconfigdata ef-earfcnlist ef-mudmidconfigdata ef-eaka"
    ),
    "phonebook": _fields(
        "phonebook-header templateID df-phonebook ef-pbr ef-ext1 ef-aas ef-gas ef-psc ef-cc ef-puid "
        "ef-iap ef-adn ef-pbc ef-anr ef-puri ef-email ef-sne ef-uid ef-grp ef-ccp1"
    ),
    "gsm-access": _fields("gsm-access-header templateID df-gsm-access ef-kc ef-kcgprs ef-cpbcch ef-invscan"),
    "df-5gs": _fields(
        "df-5gs-header templateID df-df-5gs ef-5gs3gpploci ef-5gsn3gpploci ef-5gs3gppnsc "
        "ef-5gsn3gppnsc ef-5gauthkeys ef-uac-aic ef-suci-calc-info ef-opl5g ef-supinai "
        "ef-routing-indicator ef-ursp ef-tn3gppsnn ef-cag ef-sor-cmci ef-dri ef-5gsedrx "
        "ef-5gnswo-conf ef-mchpplmn ef-kausf-derivation"
    ),
    "df-saip": _fields("df-saip-header templateID df-df-saip ef-suci-calc-info-usim"),
    "df-snpn": _fields("df-snpn-header templateID df-df-snpn ef-pws-snpn"),
    "df-5gprose": _fields(
        "df-5g-prose-header templateID df-df-5g-prose ef-5g-prose-st ef-5g-prose-dd ef-5g-prose-dc "
        "ef-5g-prose-u2nru ef-5g-prose-ru ef-5g-prose-uir"
    ),
    "isim": _fields("isim-header templateID adf-isim ef-impi ef-impu ef-domain ef-ist ef-ad ef-arr"),
    "opt-isim": _fields(
        "optisim-header templateID ef-pcscf ef-sms ef-smsp ef-smss ef-smsr ef-gbabp ef-gbanl "
        "ef-nafkca ef-uicciari ef-frompreferred ef-imsconfigdata ef-xcapconfigdata ef-webrtcuri "
        "ef-mudmidconfigdata"
    ),
    "csim": _fields(
        "csim-header templateID adf-csim ef-arr ef-call-count ef-imsi-m ef-imsi-t ef-tmsi ef-ah "
        "ef-aop ef-aloc ef-cdmahome ef-znregi ef-snregi ef-distregi ef-accolc ef-term ef-acp ef-prl "
        "ef-ruimid ef-csim-st ef-spc ef-otapaspc ef-namlock ef-ota ef-sp ef-esn-meid-me ef-li "
        "ef-usgind ef-ad ef-max-prl ef-spcs ef-mecrp ef-home-tag ef-group-tag ef-specific-tag "
        "ef-call-prompt"
    ),
    "opt-csim": _fields(
        "optcsim-header templateID ef-ssci ef-fdn ef-sms ef-smsp ef-smss ef-ssfc ef-spn ef-mdn "
        "ef-ecc ef-me3gpdopc ef-3gpdopm ef-sipcap ef-mipcap ef-sipupp ef-mipupp ef-sipsp ef-mipsp "
        "ef-sippapss ef-puzl ef-maxpuzl ef-hrpdcap ef-hrpdupp ef-csspr ef-atc ef-eprl ef-bcsmscfg "
        "ef-bcsmspref ef-bcsmstable ef-bcsmsp ef-bakpara ef-upbakpara ef-mmsn ef-ext8 ef-mmsicp "
        "ef-mmsup ef-mmsucp ef-auth-capability ef-3gcik ef-dck ef-gid1 ef-gid2 ef-cdmacnl "
        "ef-sf-euimid ef-est ef-hidden-key ef-lcsver ef-lcscp ef-sdn ef-ext2 ef-ext3 ef-ici ef-oci "
        "ef-ext5 ef-ccp2 ef-applabels ef-model ef-rc ef-smscap ef-mipflags ef-3gpduppext "
        "ef-ipv6cap ef-tcpconfig ef-dgc ef-wapbrowsercp ef-wapbrowserbm ef-mmsconfig ef-jdl"
    ),
    "eap": _fields(
        "eap-header templateID df-eap ef-eapkeys ef-eapstatus ef-puid ef-ps ef-curid ef-reid ef-realm"
    ),
    "iot": _fields(
        "iot-header templateID mf ef-pl ef-iccid ef-dir ef-arr ef-umpc adf-usim ef-imsi ef-arr-usim "
        "ef-keys ef-keysPS ef-hpplmn ef-ust ef-start-hfn ef-threshold ef-psloci ef-acc ef-fplmn "
        "ef-loci ef-ad ef-ecc ef-netpar"
    ),
    "opt-iot": _fields(
        "optiot-header templateID ef-fdn ef-sms ef-smsp ef-smss ef-spn ef-est ef-oplmnwact "
        "ef-hplmnwact ef-ehplmn ef-epsloci ef-epsnsc df-df-5gs ef-5gs3gpploci ef-5gsn3gpploci "
        "ef-5gs3gppnsc ef-5gsn3gppnsc ef-5gauthkeys ef-uac-aic ef-suci-calc-info ef-opl5g "
        "ef-supi-nai ef-routing-indicator ef-ursp ef-tn3gppsnn df-df-saip ef-suci-calc-info-usim"
    ),
}

# ServicesList (ProfileHeader eUICC-Mandatory-services): NULL components, index = tag number.
SERVICES: tuple[str, ...] = _fields(
    "contactless usim isim csim milenage tuak128 cave gba-usim gba-isim mbms eap javacard multos "
    "multiple-usim multiple-isim multiple-csim tuak256 usim-test-algorithm ber-tlv dfLink cat-tp "
    "get-identity profile-a-x25519 profile-b-p256 suciCalculatorApi dns-resolution scp11ac "
    "scp11c-authorization-mechanism s16mode eaka"
)

# AlgoParameter algorithmID named numbers.
ALGORITHMS = {1: "milenage", 2: "tuak", 3: "usim-test-algorithm"}
ALGORITHM_IDS = {name: number for number, name in ALGORITHMS.items()}

# PINKeyReferenceValue / PUKKeyReferenceValue named numbers.
PIN_REFERENCES = {
    **{n: f"pinAppl{n}" for n in range(1, 9)},
    **{9 + n: f"adm{n}" for n in range(1, 6)},
    **{128 + n: f"secondPINAppl{n}" for n in range(1, 9)},
    **{132 + n: f"adm{n}" for n in range(6, 11)},
}
PUK_REFERENCES = {
    **{n: f"pukAppl{n}" for n in range(1, 9)},
    **{128 + n: f"secondPUKAppl{n}" for n in range(1, 9)},
}

# AlgoParameter DEFAULTs: PEDefinitions uses the Milenage r1..r5 and c1..c5 of TS 35.206 4.1.
DEFAULT_ROTATION_CONSTANTS, DEFAULT_XORING_CONSTANTS = DEFAULT_MILENAGE_CONSTANTS.to_saip()
DEFAULT_SQN_OPTIONS = b"\x02"
DEFAULT_SQN_DELTA = bytes.fromhex("000010000000")
DEFAULT_SQN_AGE_LIMIT = bytes.fromhex("000010000000")
DEFAULT_PIN_ATTRIBUTES = 7
DEFAULT_PIN_ATTEMPTS = 51  # 0x33: 3 attempts, 3 left
DEFAULT_PUK_ATTEMPTS = 170  # 0xAA: 10 attempts, 10 left
