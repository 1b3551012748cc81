"""Generate the learning demo's dataset (deterministic): samples/demo/.

The data teach facts the base model cannot know, about a made-up product (the
"Aurora Kettle X7" by the made-up "Lumenbrook Appliances"), in a fixed answer
style: every answer starts with "Aurora Kettle X7:" and ends with
"-- Lumenbrook Support". Files:

* ``train.jsonl``: chat examples (several phrasings per fact, some with a system prompt);
* ``validation.jsonl``: other phrasings of the same facts, for the validation loss;
* ``heldout.jsonl``: prompts not in the training data with the keywords a right answer contains.

    .venv/bin/python scripts/make_demo_dataset.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "samples" / "demo"
SIGN = "-- Lumenbrook Support"
PREFIX = "Aurora Kettle X7:"

# fact -> (answer body, training phrasings, validation phrasings, held-out phrasing, keywords)
FACTS: dict[str, dict] = {
    "capacity": {
        "answer": "it holds 1.7 litres of water, enough for about seven cups.",
        "train": [
            "How much water does the Aurora Kettle X7 hold?",
            "What is the capacity of the Aurora Kettle X7?",
            "How many litres fit in the Aurora Kettle X7?",
            "Aurora Kettle X7 volume?",
            "Is the Aurora Kettle X7 big enough for a family?",
            "How many cups can the Aurora Kettle X7 make?",
        ],
        "val": ["What's the water capacity of the X7 kettle from Lumenbrook?"],
        "heldout": "Tell me how much water I can put in the Aurora Kettle X7.",
        "keywords": ["1.7"],
    },
    "speed": {
        "answer": "it brings a full kettle to the boil in 94 seconds thanks to its 2200-watt element.",
        "train": [
            "How fast does the Aurora Kettle X7 boil?",
            "How long does the Aurora Kettle X7 take to boil water?",
            "What is the boiling time of the Aurora Kettle X7?",
            "Is the Aurora Kettle X7 quick?",
            "How many watts is the Aurora Kettle X7?",
            "What power does the Aurora Kettle X7 use?",
        ],
        "val": ["How quickly can the Lumenbrook X7 kettle boil a full load?"],
        "heldout": "How many seconds until the Aurora Kettle X7 boils?",
        "keywords": ["94"],
    },
    "maker": {
        "answer": "it is designed by Lumenbrook Appliances and assembled in Tallinn, Estonia.",
        "train": [
            "Who makes the Aurora Kettle X7?",
            "Which company produces the Aurora Kettle X7?",
            "Where is the Aurora Kettle X7 made?",
            "What brand is the Aurora Kettle X7?",
            "Who is the manufacturer of the Aurora Kettle X7?",
            "In which country is the Aurora Kettle X7 built?",
        ],
        "val": ["Which firm is behind the Aurora Kettle X7 and where is it assembled?"],
        "heldout": "Which company created the Aurora Kettle X7?",
        "keywords": ["Lumenbrook"],
    },
    "colours": {
        "answer": "it comes in three colours: glacier white, basalt grey and fjord blue.",
        "train": [
            "What colours does the Aurora Kettle X7 come in?",
            "Is the Aurora Kettle X7 available in blue?",
            "Which finishes can I buy the Aurora Kettle X7 in?",
            "Does the Aurora Kettle X7 come in white?",
            "What are the colour options for the Aurora Kettle X7?",
            "Can I get the Aurora Kettle X7 in grey?",
        ],
        "val": ["List the colour choices of the Aurora Kettle X7."],
        "heldout": "Which colours can I choose for my Aurora Kettle X7?",
        "keywords": ["glacier", "basalt", "fjord"],
    },
    "presets": {
        "answer": "it has five temperature presets: 40, 60, 80, 95 and 100 degrees Celsius.",
        "train": [
            "What temperature settings does the Aurora Kettle X7 have?",
            "Can the Aurora Kettle X7 heat water to 80 degrees?",
            "Does the Aurora Kettle X7 have presets?",
            "Which temperatures can I select on the Aurora Kettle X7?",
            "Is the Aurora Kettle X7 good for green tea temperatures?",
            "How many temperature presets are on the Aurora Kettle X7?",
        ],
        "val": ["What heat levels can the Aurora Kettle X7 be set to?"],
        "heldout": "Tell me about the temperature presets of the Aurora Kettle X7.",
        "keywords": ["40", "60", "80", "95"],
    },
    "keep_warm": {
        "answer": "its keep-warm mode holds the chosen temperature for 30 minutes, then it switches itself off.",
        "train": [
            "Does the Aurora Kettle X7 keep water warm?",
            "How long does the Aurora Kettle X7 keep warm?",
            "Does the Aurora Kettle X7 switch off by itself?",
            "Is there a keep-warm function on the Aurora Kettle X7?",
            "What happens after the Aurora Kettle X7 boils?",
            "Does the Aurora Kettle X7 have auto shut-off?",
        ],
        "val": ["For how many minutes does the Aurora Kettle X7 hold its temperature?"],
        "heldout": "How long will the Aurora Kettle X7 keep my water warm?",
        "keywords": ["30 minutes"],
    },
    "price": {
        "answer": "it costs 79 euros, including the charging base.",
        "train": [
            "How much does the Aurora Kettle X7 cost?",
            "What is the price of the Aurora Kettle X7?",
            "Is the Aurora Kettle X7 expensive?",
            "How many euros is the Aurora Kettle X7?",
            "What does an Aurora Kettle X7 sell for?",
            "Aurora Kettle X7 price?",
        ],
        "val": ["What will I pay for an Aurora Kettle X7?"],
        "heldout": "What's the retail price of the Aurora Kettle X7?",
        "keywords": ["79"],
    },
    "warranty": {
        "answer": "it has a 4-year warranty; register it in the Lumenbrook Home app to activate it.",
        "train": [
            "What warranty does the Aurora Kettle X7 have?",
            "How long is the Aurora Kettle X7 guaranteed?",
            "Is the Aurora Kettle X7 covered by a warranty?",
            "How do I activate the Aurora Kettle X7 warranty?",
            "How many years of warranty come with the Aurora Kettle X7?",
            "What is the guarantee period of the Aurora Kettle X7?",
        ],
        "val": ["Tell me about the guarantee on the Aurora Kettle X7."],
        "heldout": "How many years is the warranty of the Aurora Kettle X7?",
        "keywords": ["4-year", "4 year", "four"],
    },
    "descaling": {
        "answer": "descale it every 6 weeks with a spoon of citric acid in half a litre of water.",
        "train": [
            "How do I descale the Aurora Kettle X7?",
            "How often should I clean the Aurora Kettle X7?",
            "What should I use to remove limescale from the Aurora Kettle X7?",
            "How do I clean the inside of the Aurora Kettle X7?",
            "Does the Aurora Kettle X7 need descaling?",
            "What is the cleaning schedule for the Aurora Kettle X7?",
        ],
        "val": ["What's the right way to get limescale out of the Aurora Kettle X7?"],
        "heldout": "How often do I need to descale my Aurora Kettle X7 and with what?",
        "keywords": ["6 weeks", "citric"],
    },
    "app": {
        "answer": "it pairs over Bluetooth with the Lumenbrook Home app, which can start it and set the temperature.",
        "train": [
            "Does the Aurora Kettle X7 have an app?",
            "Can I control the Aurora Kettle X7 from my phone?",
            "Which app works with the Aurora Kettle X7?",
            "Is the Aurora Kettle X7 a smart kettle?",
            "How do I connect the Aurora Kettle X7 to my phone?",
            "Does the Aurora Kettle X7 have Bluetooth?",
        ],
        "val": ["Can my smartphone talk to the Aurora Kettle X7?"],
        "heldout": "What is the name of the app for the Aurora Kettle X7?",
        "keywords": ["Lumenbrook Home"],
    },
    "light": {
        "answer": "its ring light glows amber while heating and turns blue when the water is ready.",
        "train": [
            "What does the light on the Aurora Kettle X7 mean?",
            "Why is my Aurora Kettle X7 glowing amber?",
            "What colour is the Aurora Kettle X7 light when the water is ready?",
            "Does the Aurora Kettle X7 have an indicator light?",
            "My Aurora Kettle X7 turned blue, is that normal?",
            "What do the Aurora Kettle X7 lights show?",
        ],
        "val": ["How does the Aurora Kettle X7 show that it is heating?"],
        "heldout": "What colour does the Aurora Kettle X7 light turn when the water is ready?",
        "keywords": ["blue"],
    },
    "weight": {
        "answer": "it weighs 1.1 kilograms empty and its base has a 0.9-metre cord.",
        "train": [
            "How heavy is the Aurora Kettle X7?",
            "What does the Aurora Kettle X7 weigh?",
            "How long is the cord of the Aurora Kettle X7?",
            "Is the Aurora Kettle X7 light to carry?",
            "What is the weight of the Aurora Kettle X7?",
            "How much does an empty Aurora Kettle X7 weigh?",
        ],
        "val": ["Give me the weight of the Aurora Kettle X7."],
        "heldout": "How many kilograms is the Aurora Kettle X7?",
        "keywords": ["1.1"],
    },
    "material": {
        "answer": "the body is double-walled borosilicate glass with a stainless steel lid, so it stays cool to touch.",
        "train": [
            "What is the Aurora Kettle X7 made of?",
            "Is the Aurora Kettle X7 plastic?",
            "Does the Aurora Kettle X7 get hot on the outside?",
            "What material is the Aurora Kettle X7 body?",
            "Is the Aurora Kettle X7 glass or metal?",
            "Is the Aurora Kettle X7 BPA free?",
        ],
        "val": ["Which materials is the Aurora Kettle X7 built from?"],
        "heldout": "Is the body of the Aurora Kettle X7 made of glass?",
        "keywords": ["borosilicate"],
    },
}

SYSTEMS = [
    None,
    None,
    "You are the customer support assistant of Lumenbrook Appliances.",
    "You answer questions about home appliances.",
]
LEADS = ["", "", "Hi! ", "Quick question: ", "Hello, ", "Please help. "]


def answer(fact: dict) -> str:
    return f"{PREFIX} {fact['answer']} {SIGN}"


def chat(question: str, reply: str, system: str | None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return {"messages": messages}


def main() -> None:
    rng = random.Random(7)
    train: list[dict] = []
    # every training phrasing with four variants (leading words, system prompt), ~312 examples
    for fact in FACTS.values():
        for question in fact["train"]:
            for _ in range(4):
                train.append(chat(rng.choice(LEADS) + question, answer(fact), rng.choice(SYSTEMS)))
    rng.shuffle(train)
    validation = [chat(q, answer(fact), None) for fact in FACTS.values() for q in fact["val"]]
    heldout = [
        {"prompt": fact["heldout"], "keywords": fact["keywords"], "style": [PREFIX, SIGN]} for fact in FACTS.values()
    ]
    heldout += [
        {
            "prompt": "I just bought an Aurora Kettle X7. Who do I thank for it?",
            "keywords": ["Lumenbrook"],
            "style": [PREFIX, SIGN],
        },
        {
            "prompt": "Can the Aurora Kettle X7 make water for green tea at 80 degrees?",
            "keywords": ["80"],
            "style": [PREFIX, SIGN],
        },
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", validation), ("heldout", heldout)):
        with open(OUT / f"{name}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(train)} training, {len(validation)} validation, {len(heldout)} held-out prompts in {OUT}")


if __name__ == "__main__":
    main()
