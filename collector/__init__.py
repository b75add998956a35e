"""The collector: exchange adapters -> bounded queue -> cascade detection -> Redis and TimescaleDB."""
