"""The OCPP 1.6J adapter: the charge point's side of the protocol, on top of ocppd's core."""

#: Settings key of the persisted UpdateFirmware job (firmware.py). Here, so that start-up can
#: tell whether a job is pending without importing the Firmware Management profile.
FIRMWARE_JOB_KEY = "firmware.job"
