#!/usr/bin/env python3
"""Generate sensors.csv: a synthetic production line with drift, for Gyre's demo.

20,000 readings in time order of a machine on one of three lines, during a day
or night shift: temperature, vibration, load, humidity (floats), shift and line
(categories), and `failure` (1 = the part failed inspection). Two drifts are
planted so that a model that never retrains decays:

* rows 7,000-13,999: the coolant degrades — temperatures rise by 6 degrees and
  failures now follow vibration more than temperature (concept and covariate drift);
* rows 14,000-: line C is retooled — its failure rate rises and load matters more.

Deterministic (seed 7): `python3 generate.py > sensors.csv` reproduces the file.
"""
import math
import random

random.seed(7)
N = 20000
print("temperature,vibration,load,humidity,shift,line,failure")
for i in range(N):
    hour = (i // 2) % 24
    shift = "day" if 7 <= hour < 19 else "night"
    line = random.choice(["A", "B", "C"])
    load = min(1.0, max(0.0, random.gauss(0.6 if shift == "day" else 0.45, 0.15)))
    temperature = random.gauss(60 + 10 * load, 4)
    vibration = max(0.0, random.gauss(2.0 + 1.5 * load, 0.6))
    humidity = min(100.0, max(0.0, random.gauss(45, 10)))
    if i < 7000:
        z = 0.35 * (temperature - 66) + 0.8 * (vibration - 2.9) - 1.0
    elif i < 14000:
        temperature += 6
        z = 0.05 * (temperature - 72) + 2.2 * (vibration - 2.9) - 0.6
    else:
        temperature += 6
        z = 0.05 * (temperature - 72) + 1.2 * (vibration - 2.9) + (3.0 * (load - 0.5) + 1.2 if line == "C" else -0.8)
    z += 0.3 if shift == "night" else 0.0
    p = 1 / (1 + math.exp(-z))
    failure = 1 if random.random() < p else 0
    print(f"{temperature:.3f},{vibration:.3f},{load:.4f},{humidity:.2f},{shift},{line},{failure}")
