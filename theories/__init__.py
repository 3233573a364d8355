"""Pure analysis of candles: one module per theory, plus the registry (`theories.registry`)."""
