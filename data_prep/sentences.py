"""Sentence generators for the built-in corpora.

`assistant_sentences` writes voice-assistant requests (timers, alarms, weather, music, smart
home, shopping lists, calls, reminders, questions) with slot values; `broadcast_sentences`
writes news, sport and advert talk for the TV/radio noise, from templates and vocabulary kept
apart from the assistant domain so noise speech never repeats corpus sentences. Text is
normalised as an ASR transcript: lower case, numbers spelled out, no punctuation but
apostrophes.
"""

from __future__ import annotations

import re

import numpy as np

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell_number(n: int) -> str:
    """0 <= n < 1,000,000 in words ("two hundred and five")."""
    if n < 0 or n >= 1_000_000:
        raise ValueError(f"cannot spell {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + spell_number(rest))
    rest = n % 1000
    return (
        spell_number(n // 1000)
        + " thousand"
        + ("" if rest == 0 else (" and " if rest < 100 else " ") + spell_number(rest))
    )


def spell_time(hour: int, minute: int) -> str:
    if minute == 0:
        return f"{spell_number(hour)} o'clock"
    if minute == 15:
        return f"quarter past {spell_number(hour)}"
    if minute == 30:
        return f"half past {spell_number(hour)}"
    if minute < 10:
        return f"{spell_number(hour)} oh {spell_number(minute)}"
    return f"{spell_number(hour)} {spell_number(minute)}"


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


CITIES = _words("""london, paris, berlin, madrid, rome, vienna, prague, warsaw, lisbon, dublin, amsterdam, brussels,
stockholm, oslo, helsinki, copenhagen, athens, istanbul, moscow, cairo, nairobi, lagos, johannesburg, cape town,
tokyo, osaka, seoul, beijing, shanghai, hong kong, singapore, bangkok, manila, jakarta, sydney, melbourne,
brisbane, perth, auckland, toronto, montreal, vancouver, boston, chicago, denver, seattle, portland, dallas,
houston, austin, phoenix, atlanta, miami, orlando, detroit, philadelphia, baltimore, nashville, memphis,
new york, los angeles, san francisco, san diego, las vegas, new orleans, salt lake city, kansas city, mexico city,
lima, bogota, santiago, buenos aires, rio de janeiro, havana, edinburgh, glasgow, manchester, liverpool, leeds,
bristol, cardiff, belfast, oxford, cambridge, brighton, york, munich, hamburg, cologne, frankfurt, zurich,
geneva, milan, venice, florence, naples, barcelona, seville, valencia, marseille, lyon, nice, krakow, budapest,
bucharest, sofia, belgrade, zagreb, riga, vilnius, tallinn, reykjavik, delhi, mumbai, chennai, kolkata, dubai,
doha, tehran, baghdad, karachi, lahore, hanoi, kyoto, taipei, honolulu, anchorage, minneapolis, cleveland,
pittsburgh, cincinnati, sacramento, albuquerque, omaha, tucson, buffalo, richmond, charlotte, raleigh""")

FIRST_NAMES = _words("""james, mary, john, patricia, robert, jennifer, michael, linda, william, elizabeth, david,
barbara, richard, susan, joseph, jessica, thomas, sarah, charles, karen, christopher, nancy, daniel, lisa,
matthew, betty, anthony, margaret, mark, sandra, donald, ashley, steven, kimberly, paul, emily, andrew, donna,
joshua, michelle, kenneth, dorothy, kevin, carol, brian, amanda, george, melissa, edward, deborah, ronald,
stephanie, timothy, rebecca, jason, sharon, jeffrey, laura, ryan, cynthia, jacob, kathleen, gary, amy,
nicholas, shirley, eric, angela, jonathan, helen, stephen, anna, larry, brenda, justin, pamela, scott, nicole,
brandon, emma, benjamin, samantha, samuel, katherine, gregory, christine, frank, debra, alexander, rachel,
raymond, catherine, patrick, carolyn, jack, janet, dennis, ruth, jerry, maria, tyler, heather, aaron, diane,
jose, virginia, adam, julie, henry, joyce, nathan, victoria, douglas, olivia, zachary, kelly, peter, christina,
kyle, lauren, walter, joan, ethan, evelyn, jeremy, judith, harold, megan, keith, cheryl, christian, andrea,
roger, hannah, noah, martha, gerald, jacqueline, carl, frances, terry, gloria, sean, ann, austin, teresa,
arthur, kathryn, lawrence, sara, jesse, janice, dylan, jean, bryan, alice, joe, madison, jordan, doris,
billy, abigail, bruce, julia, albert, judy, willie, grace, gabriel, denise, logan, amber, alan, marilyn,
juan, beverly, wayne, danielle, roy, theresa, ralph, sophia, randy, marie, eugene, diana, vincent, brittany,
russell, natalie, elijah, isabella, louis, charlotte, bobby, rose, philip, alexis, johnny, kayla""")

FAMILY = _words(
    "mom, dad, grandma, grandpa, my sister, my brother, my wife, my husband, my boss, the office, the dentist, the doctor, the school, the plumber, my neighbour, my aunt, my uncle, my cousin"
)

ITEMS = _words("""milk, eggs, bread, butter, cheese, yogurt, apples, bananas, oranges, grapes, lemons, limes,
strawberries, blueberries, raspberries, peaches, pears, plums, cherries, watermelon, pineapple, mango, avocado,
tomatoes, potatoes, onions, garlic, carrots, celery, lettuce, spinach, broccoli, cauliflower, cabbage,
cucumbers, peppers, mushrooms, zucchini, corn, peas, beans, lentils, rice, pasta, noodles, flour, sugar, salt,
pepper, oil, vinegar, honey, jam, peanut butter, cereal, oatmeal, granola, coffee, tea, juice, water, soda,
beer, wine, chicken, beef, pork, bacon, sausages, ham, turkey, salmon, tuna, shrimp, tofu, soup, crackers,
cookies, chips, chocolate, ice cream, popcorn, nuts, almonds, walnuts, raisins, ketchup, mustard, mayonnaise,
salsa, hummus, bagels, muffins, tortillas, pizza, dish soap, paper towels, toilet paper, toothpaste, shampoo,
conditioner, soap, deodorant, tissues, batteries, light bulbs, trash bags, aluminum foil, sponges, detergent,
bleach, dog food, cat food, diapers, baby wipes, vitamins, aspirin, bandages, sunscreen, candles, matches,
napkins, plates, cups, forks, spoons, straws, ginger, cinnamon, basil, oregano, parsley, cilantro, thyme,
rosemary, paprika, cumin, vanilla, baking soda, yeast, cream, sour cream, cottage cheese, mozzarella, cheddar,
parmesan, sweet potatoes, pumpkin, squash, kale, asparagus, radishes, beets, artichokes, olives, pickles""")

ARTISTS = _words("""the beatles, queen, coldplay, adele, madonna, prince, nirvana, radiohead, metallica,
abba, the rolling stones, pink floyd, led zeppelin, elvis presley, frank sinatra, bob dylan, david bowie,
elton john, stevie wonder, aretha franklin, michael jackson, whitney houston, taylor swift, beyonce,
rihanna, drake, eminem, kanye west, bruno mars, ed sheeran, shakira, lady gaga, katy perry, justin bieber,
billie eilish, the weeknd, dua lipa, harry styles, ariana grande, post malone, kendrick lamar, miles davis,
john coltrane, louis armstrong, ella fitzgerald, billie holiday, nina simone, ray charles, johnny cash,
dolly parton, willie nelson, bob marley, fleetwood mac, the eagles, the doors, the who, the kinks, oasis,
blur, the cure, the smiths, u two, pearl jam, green day, foo fighters, the killers, arctic monkeys,
daft punk, bach, mozart, beethoven, chopin, vivaldi, tchaikovsky, debussy, brahms, handel, schubert""")

GENRES = _words(
    "jazz, blues, rock, pop, classical, country, reggae, hip hop, soul, funk, folk, metal, punk, disco, techno, house music, salsa, gospel, opera, lullabies, rain sounds, white noise, christmas music, workout music, relaxing music, dinner music, party music, piano music"
)

ROOMS = _words(
    "kitchen, living room, bedroom, bathroom, hallway, garage, office, basement, dining room, nursery, porch, garden, attic, laundry room, guest room, patio, backyard, front door, back door, upstairs, downstairs"
)
DEVICES = _words(
    "lights, lamp, fan, heater, air conditioner, thermostat, tv, television, radio, speaker, coffee maker, kettle, oven, dishwasher, washing machine, dryer, vacuum, robot vacuum, sprinklers, blinds, curtains, door lock, garage door, security camera, doorbell, humidifier, air purifier, fireplace, porch light, night light"
)
COLOURS = _words("red, blue, green, yellow, orange, purple, pink, white, warm white, cool white, teal, violet, amber")
DAYS = _words(
    "monday, tuesday, wednesday, thursday, friday, saturday, sunday, today, tonight, tomorrow, tomorrow morning, tomorrow night, this weekend, next week, this afternoon, this evening"
)
MONTHS = _words("january, february, march, april, may, june, july, august, september, october, november, december")
ACTIVITIES = _words("""call the bank, pay the rent, water the plants, feed the dog, walk the dog, take my medicine,
pick up the kids, buy a birthday present, book a table, renew my passport, return the library books,
charge my phone, check the oven, take out the trash, move the car, call the vet, submit the report,
send the invoice, cancel the subscription, pack my suitcase, clean the fridge, change the sheets,
go to the gym, stretch, drink some water, practice the piano, read the contract, email the landlord,
buy stamps, fill up the tank, check the mail, lock the back door, pay the electricity bill""")
FOODS = _words(
    "pancakes, lasagna, chili, curry, risotto, guacamole, banana bread, chicken soup, apple pie, brownies, meatballs, fried rice, omelette, pad thai, tacos, burritos, carrot cake, scones, paella, goulash, stew, falafel, dumplings, ramen, sushi, quiche, muffins, meatloaf"
)
QUESTIONS = _words("""how far is the moon, how tall is mount everest, who wrote hamlet, who painted the mona lisa,
what is the capital of australia, what is the capital of canada, how many ounces are in a pound,
how many feet are in a mile, what is the speed of light, when did the titanic sink, who invented the telephone,
what is the population of china, how old is the universe, what does photosynthesis mean,
how do you spell necessary, what rhymes with orange, who won the world cup, what is the largest ocean,
how many bones are in the human body, why is the sky blue, how do airplanes fly, what time is it,
what day is it, what is today's date, what's the news, tell me a joke, tell me a story, flip a coin,
roll a dice, what can you do, how are you, what's your name, who made you, what's on my calendar,
what's my next meeting, do i have any messages, read my messages, where is my phone""")
UNITS = _words(
    "cups, tablespoons, teaspoons, ounces, pounds, grams, kilograms, liters, miles, kilometers, inches, centimeters, feet, meters, degrees fahrenheit, degrees celsius"
)
WEATHER = _words("rain, snow, sunshine, wind, fog, thunder, a storm, hail, frost, a heatwave")
APPS = _words("spotify, the radio, my playlist, my favorites, my podcast, the news, an audiobook")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _hour(rng):
    return int(rng.integers(1, 13))


def _minute(rng):
    return int(_pick(rng, (0, 0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 7, 12, 48)))


def _duration(rng):
    n = int(_pick(rng, (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 45, 50, 60, 90)))
    unit = _pick(rng, ("minute", "minute", "second", "hour"))
    return f"{spell_number(n)} {unit}{'' if n == 1 else 's'}"


def _clock(rng):
    return spell_time(_hour(rng), _minute(rng)) + _pick(
        rng, ("", "", " a m", " p m", " in the morning", " in the evening", " at night")
    )


def _template(rng: np.random.Generator) -> str:
    p = lambda options: _pick(rng, options)  # noqa: E731
    intent = int(rng.integers(12))
    if intent == 0:
        return p(
            (
                f"set a timer for {_duration(rng)}",
                f"start a {_duration(rng)} timer",
                f"set a {p(FOODS)} timer for {_duration(rng)}",
                f"how much time is left on my timer",
                f"cancel the {p(FOODS)} timer",
                f"add {_duration(rng)} to the timer",
                f"pause the timer",
            )
        )
    if intent == 1:
        return p(
            (
                f"wake me up at {_clock(rng)}",
                f"set an alarm for {_clock(rng)} {p(DAYS)}",
                f"set an alarm for {p(DAYS)} at {_clock(rng)}",
                f"cancel my alarm for {_clock(rng)}",
                f"snooze for {_duration(rng)}",
                f"what alarms do i have {p(DAYS)}",
                f"change my {_clock(rng)} alarm to {_clock(rng)}",
            )
        )
    if intent == 2:
        return p(
            (
                f"what's the weather in {p(CITIES)}",
                f"what's the weather like {p(DAYS)}",
                f"will it {p(('rain', 'snow', 'be windy', 'be sunny', 'be cold', 'be hot'))} in {p(CITIES)} {p(DAYS)}",
                f"is there going to be {p(WEATHER)} {p(DAYS)}",
                f"what's the temperature in {p(CITIES)} right now",
                f"how hot will it get in {p(CITIES)} on {p(DAYS)}",
                f"do i need an umbrella {p(DAYS)}",
                f"what's the forecast for {p(CITIES)} this weekend",
            )
        )
    if intent == 3:
        return p(
            (
                f"play {p(ARTISTS)}",
                f"play some {p(GENRES)}",
                f"play {p(GENRES)} in the {p(ROOMS)}",
                f"play the latest album by {p(ARTISTS)}",
                f"shuffle songs by {p(ARTISTS)}",
                f"play {p(APPS)}",
                f"skip this song",
                f"who sings this song",
                f"turn the volume up to {spell_number(int(rng.integers(1, 11)))}",
                f"add this song to my {p(GENRES)} playlist",
                f"play something like {p(ARTISTS)}",
            )
        )
    if intent == 4:
        return p(
            (
                f"turn {p(('on', 'off'))} the {p(ROOMS)} {p(DEVICES)}",
                f"turn the {p(DEVICES)} in the {p(ROOMS)} {p(('on', 'off'))}",
                f"dim the {p(ROOMS)} lights to {spell_number(int(rng.integers(1, 20)) * 5)} percent",
                f"set the {p(ROOMS)} lights to {p(COLOURS)}",
                f"set the thermostat to {spell_number(int(rng.integers(60, 80)))} degrees",
                f"is the {p(('front door', 'back door', 'garage door'))} locked",
                f"lock the {p(('front door', 'back door', 'garage door'))}",
                f"start the {p(DEVICES)}",
                f"show me the {p(ROOMS)} camera",
                f"make it {p(('warmer', 'cooler', 'brighter', 'darker'))} in the {p(ROOMS)}",
            )
        )
    if intent == 5:
        return p(
            (
                f"add {p(ITEMS)} to my shopping list",
                f"add {p(ITEMS)} and {p(ITEMS)} to the list",
                f"put {spell_number(int(rng.integers(2, 13)))} {p(ITEMS)} on my shopping list",
                f"remove {p(ITEMS)} from my shopping list",
                f"what's on my shopping list",
                f"do i need {p(ITEMS)}",
                f"order more {p(ITEMS)}",
                f"clear my shopping list",
            )
        )
    if intent == 6:
        return p(
            (
                f"call {p(FIRST_NAMES)}",
                f"call {p(FAMILY)}",
                f"call {p(FIRST_NAMES)} on speaker",
                f"send a message to {p(FIRST_NAMES)} saying i'll be late",
                f"text {p(FAMILY)} that i'm on my way",
                f"video call {p(FIRST_NAMES)}",
                f"hang up",
                f"redial the last number",
                f"tell {p(FIRST_NAMES)} i'll be there at {_clock(rng)}",
            )
        )
    if intent == 7:
        return p(
            (
                f"remind me to {p(ACTIVITIES)} {p(DAYS)}",
                f"remind me to {p(ACTIVITIES)} at {_clock(rng)}",
                f"remind me in {_duration(rng)} to {p(ACTIVITIES)}",
                f"remind me on {p(MONTHS)} {spell_number(int(rng.integers(1, 29)))} to {p(ACTIVITIES)}",
                f"what are my reminders for {p(DAYS)}",
            )
        )
    if intent == 8:
        return p(QUESTIONS)
    if intent == 9:
        a, b = int(rng.integers(2, 100)), int(rng.integers(2, 100))
        return p(
            (
                f"what's {spell_number(a)} {p(('plus', 'minus', 'times'))} {spell_number(b)}",
                f"what is {spell_number(a)} percent of {spell_number(b * 10)}",
                f"convert {spell_number(a)} {p(UNITS)} to {p(UNITS)}",
                f"how many {p(UNITS)} in {spell_number(a)} {p(UNITS)}",
                f"what time is it in {p(CITIES)}",
                f"how long does it take to drive to {p(CITIES)}",
                f"how far is {p(CITIES)} from {p(CITIES)}",
            )
        )
    if intent == 10:
        return p(
            (
                f"how do i make {p(FOODS)}",
                f"find a recipe for {p(FOODS)}",
                f"how long should i bake {p(FOODS)}",
                f"what can i make with {p(ITEMS)} and {p(ITEMS)}",
                f"how many calories are in {p(ITEMS)}",
            )
        )
    return p(
        (
            f"schedule a meeting with {p(FIRST_NAMES)} {p(DAYS)} at {_clock(rng)}",
            f"what's on my calendar for {p(DAYS)}",
            f"move my {_clock(rng)} meeting to {p(DAYS)}",
            f"when is {p(FIRST_NAMES)}'s birthday",
            f"add {p(FIRST_NAMES)}'s birthday on {p(MONTHS)} {spell_number(int(rng.integers(1, 29)))}",
            f"book a flight to {p(CITIES)} {p(DAYS)}",
            f"find a hotel in {p(CITIES)}",
            f"navigate to {p(CITIES)}",
            f"how is the traffic to {p(CITIES)}",
            f"order a taxi to {p(CITIES)} airport",
        )
    )


_ALLOWED = re.compile(r"^[a-z' ]+$")


def normalise(text: str) -> str:
    text = " ".join(text.lower().split())
    if not _ALLOWED.match(text):
        raise ValueError(f"sentence has characters outside a-z, apostrophe and space: {text!r}")
    return text


def assistant_sentences(count: int, seed: int) -> list[str]:
    """`count` voice-assistant requests; repeats are allowed (as in real traffic) but rare."""
    rng = np.random.default_rng([seed, 0xA551])
    return [normalise(_template(rng)) for _ in range(count)]


_NEWS_SUBJECTS = _words("""the government, the prime minister, the senate, the committee, the council, scientists,
researchers, investors, the central bank, police, firefighters, the union, farmers, the league, the coach,
the team, the airline, the museum, the university, the hospital, engineers, economists, voters, lawmakers""")
_NEWS_VERBS = _words("""announced, confirmed, rejected, approved, postponed, criticised, celebrated, investigated,
unveiled, defended, questioned, predicted, reported, warned about, agreed on, voted against""")
_NEWS_OBJECTS = _words("""a new budget, the trade agreement, record profits, the highway project, an energy plan,
the election results, stricter regulations, the merger, a vaccine trial, tax reforms, the stadium deal,
a ceasefire, rising inflation, the housing shortage, a drought, severe flooding, the championship final,
an injury crisis, the transfer window, a recall of vehicles, interest rates, the pension scheme""")
_NEWS_TAILS = _words("""on wednesday, after months of debate, despite strong opposition, earlier this morning,
according to officials, in a surprise move, for the third year running, ahead of the summit, late last night,
during the press conference, in the second half, before a packed crowd""")
_ADS = _words("""don't miss our biggest sale of the season, call now and receive a free gift,
visit your local dealer today, terms and conditions apply, limited time offer while stocks last,
now with twice the cleaning power, the smarter way to save, ask your pharmacist for details,
brought to you by our sponsors, stay tuned for more after the break, and now back to the studio,
coming up next the evening forecast, that's all from us tonight""")


def broadcast_sentences(count: int, seed: int) -> list[str]:
    """News, sport and advert sentences for the TV/radio noise (disjoint from the assistant domain)."""
    rng = np.random.default_rng([seed, 0xB0AD])
    out = []
    for _ in range(count):
        if rng.random() < 0.25:
            out.append(normalise(_pick(rng, _ADS)))
        else:
            out.append(
                normalise(
                    " ".join(
                        (
                            _pick(rng, _NEWS_SUBJECTS),
                            _pick(rng, _NEWS_VERBS),
                            _pick(rng, _NEWS_OBJECTS),
                            _pick(rng, _NEWS_TAILS),
                        )
                    )
                )
            )
    return out
