-- What a session carries (issue 13): a terminal (`shell`, every session so
-- far) or the device's screen and input (`screen`). A support code names
-- the channel its attended session will open once the person consents.
ALTER TABLE sessions ADD COLUMN channel TEXT NOT NULL DEFAULT 'shell' CHECK (channel IN ('shell', 'screen'));
ALTER TABLE support_codes ADD COLUMN channel TEXT NOT NULL DEFAULT 'shell' CHECK (channel IN ('shell', 'screen'));
