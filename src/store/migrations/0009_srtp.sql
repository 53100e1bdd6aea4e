-- SRTP per cluster (RFC 3711, AES_CM_128_HMAC_SHA1_80): the 30-byte master key and salt,
-- base64 as in SDES `inline:` (RFC 4568); NULL for plain RTP. One key per cluster.
ALTER TABLE clusters ADD COLUMN srtp_key TEXT;
