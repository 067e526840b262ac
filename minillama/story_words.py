"""Word lists and sentence patterns for the story generator in `minillama.data`.

All text here was written for this project. Patterns use `{slots}` filled by `data.py`:
{name} {Name} the main character, {he} {his} {him} {He} {His} pronouns, {animal} the pet,
{pet} the pet's name, {place} a place phrase ("in the park"), {obj} the object,
{helper} {Helper} the helper, {mood} the closing feeling, and a few more noted below.
"""

GIRLS = ["Lily", "Mia", "Emma", "Sara", "Anna", "Lucy", "Zoe", "Ella", "Rosa", "Nina", "Maya",
         "Ava", "Chloe", "Ruby", "Grace", "Ivy", "Hana", "Amara", "Leah", "Sofia", "Clara",
         "Nora", "Daisy", "Poppy", "Isla", "Jade", "Kira", "Luna", "Tess", "Wren"]
BOYS = ["Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Noah", "Finn", "Omar", "Tim", "Kai", "Eli",
        "Jake", "Ravi", "Luca", "Theo", "Hugo", "Milo", "Owen", "Ezra", "Dan", "Joe", "Ali",
        "Arlo", "Rex", "Ned", "Felix", "Oscar", "Toby", "Ian"]
PET_NAMES = ["Spot", "Fluffy", "Pip", "Bella", "Coco", "Buddy", "Sunny", "Patch", "Biscuit",
             "Pepper", "Shadow", "Bubbles", "Ziggy", "Daisy", "Nibbles", "Socks", "Muffin",
             "Peanut", "Rocky", "Tiny"]

# animal -> (what it says, how it moves)
ANIMALS = {
    "dog": ("barked", "ran"), "cat": ("meowed", "jumped"), "bunny": ("squeaked", "hopped"),
    "duck": ("quacked", "waddled"), "frog": ("croaked", "hopped"), "bird": ("chirped", "flew"),
    "puppy": ("yipped", "ran"), "kitten": ("mewed", "pounced"), "mouse": ("squeaked", "ran"),
    "turtle": ("hummed", "crawled"), "pony": ("neighed", "trotted"), "goat": ("bleated", "leapt"),
    "pig": ("oinked", "trotted"), "hen": ("clucked", "strutted"), "lamb": ("baaed", "skipped"),
    "hamster": ("squeaked", "scurried"), "parrot": ("squawked", "flew"), "fox": ("yipped", "dashed"),
    "squirrel": ("chattered", "scampered"), "owl": ("hooted", "flew"), "bear cub": ("growled", "rolled"),
    "goose": ("honked", "waddled"), "cow": ("mooed", "walked"), "snail": ("hummed", "slid"),
    "deer": ("snorted", "leapt"), "chick": ("peeped", "ran"), "otter": ("squeaked", "swam"),
    "hedgehog": ("sniffed", "shuffled"), "seal": ("barked", "slid"), "penguin": ("squawked", "waddled"),
}
ANIMAL_ADJS = ["little", "fluffy", "small", "friendly", "playful", "brown", "white", "spotted",
               "sleepy", "funny", "tiny", "gentle", "grey", "happy", "soft"]

# place phrase -> what one sees there (used after "saw")
PLACES = {
    "in the park": ["tall trees", "a green slide", "a little pond"],
    "at the beach": ["big waves", "soft sand", "shiny shells"],
    "in the forest": ["tall trees", "red mushrooms", "a quiet stream"],
    "in the garden": ["bright flowers", "busy bees", "a wooden fence"],
    "on the farm": ["a red barn", "fresh hay", "a muddy field"],
    "by the river": ["smooth stones", "green reeds", "a small bridge"],
    "in the meadow": ["yellow flowers", "tall grass", "white butterflies"],
    "at the lake": ["a wooden dock", "quiet ducks", "blue water"],
    "in the village": ["small houses", "a busy market", "a stone well"],
    "on the hill": ["a big oak tree", "windy grass", "the whole town below"],
    "in the backyard": ["a swing", "a sandbox", "a little shed"],
    "at school": ["a big playground", "colorful chalk", "a tall flagpole"],
    "in the jungle": ["long vines", "huge leaves", "noisy monkeys"],
    "near the mountains": ["snowy peaks", "a rocky path", "a cold stream"],
    "at the zoo": ["a sleepy lion", "tall giraffes", "a splashing seal"],
    "in the kitchen": ["a warm oven", "a big table", "jars of jam"],
    "at the playground": ["a red swing", "a long slide", "a sandpit"],
    "by the sea": ["white boats", "crying gulls", "wet rocks"],
    "in the snowy woods": ["white pine trees", "deep snow", "tiny footprints"],
    "at the library": ["tall shelves", "quiet corners", "soft chairs"],
    "in the town square": ["a fountain", "pigeons", "a big clock"],
    "on the island": ["palm trees", "warm sand", "a little boat"],
    "in the orchard": ["apple trees", "ripe pears", "a wooden ladder"],
    "at the pond": ["lily pads", "green frogs", "tall reeds"],
}

# object -> what you do with it (after "to")
OBJECTS = {
    "ball": "play catch", "kite": "fly it high", "teddy bear": "hug it at night",
    "book": "read it", "hat": "wear it in the sun", "toy boat": "sail it on the water",
    "drum": "play a song", "balloon": "hold it all day", "crayon": "draw a picture",
    "shell": "show it to everyone", "blanket": "keep warm", "cup": "drink warm milk",
    "scarf": "wear it in the snow", "jar": "keep little stones", "map": "find the way home",
    "key": "open the old box", "bell": "ring a happy sound", "flower": "give it to a friend",
    "cookie": "share it", "train": "play on the floor", "whistle": "make a loud sound",
    "bucket": "build a sandcastle", "shovel": "dig a hole", "robot": "play all day",
    "doll": "play house", "marble": "roll it on the floor", "spoon": "stir the soup",
    "feather": "tickle a friend", "lamp": "see in the dark", "box": "hide treasures",
    "sock": "stay warm", "rock": "add it to a collection", "bike": "ride to the shop",
    "wagon": "carry things", "coat": "stay dry in the rain", "puzzle": "finish it",
    "leaf": "press it in a book", "ribbon": "tie a bow", "apple": "eat it for lunch",
    "umbrella": "stay dry", "basket": "carry apples", "paintbrush": "paint a picture",
    "star sticker": "put it on the wall", "rope": "play jump rope", "pinecone": "make a craft",
}
COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "shiny", "golden",
          "silver", "striped", "tiny", "big", "new", "old", "soft", "bright", "little", "white"]
TRAITS = ["kind", "brave", "curious", "shy", "happy", "silly", "clever", "gentle", "cheerful",
          "careful", "busy", "friendly", "quiet", "helpful", "playful"]
AGES = ["little", "young", "small"]

WEATHER = [
    "The sun was shining and the sky was blue.", "It was a warm and sunny day.",
    "The wind was blowing softly.", "It was a cloudy day, but it was not cold.",
    "Little drops of rain fell from the grey sky.", "Snow covered the ground like a white blanket.",
    "The air was cool and fresh.", "It was a hot summer day.", "A light fog hung in the air.",
    "The morning was bright and calm.", "The leaves were falling from the trees.",
    "It had rained all night, and everything was wet.",
]
OPENINGS = ["Once upon a time", "One day", "Long ago", "One sunny morning", "One fine day",
            "One afternoon", "Last summer", "One cold morning", "Not long ago", "Early one morning"]

# Beats. Each entry is one way to say that part of the story.
INTRO = [
    "{opening}, there was a {age} {kind} named {name}.",
    "{opening}, a {trait} {kind} called {name} lived {home}.",
    "{opening}, {name} was {place}.",
    "{name} was a {trait} {kind} who lived {home}.",
    "{opening}, a {age} {kind} named {name} went to play {place}.",
    "There once was a {trait} {kind} named {name}.",
]
PET = [
    "{He} had a {animal_adj} {animal} named {pet}.",
    "{His} best friend was a {animal_adj} {animal} called {pet}.",
    "{name} and {his} {animal}, {pet}, did everything together.",
    "Every day, {name} played with {pet}, {his} {animal_adj} {animal}.",
    "{pet} the {animal} always followed {name} everywhere.",
    "{name} loved {his} {animal}. Its name was {pet}.",
]
SCENE = [
    "That day, {name} and {pet} went to play {place}.",
    "{name} took {pet} to play {place}.",
    "They went to look for fun {place}.",
    "{pet} {move} ahead, and {name} followed {him} {place}.",
    "After breakfast, {name} and {pet} went out to play {place}.",
    "{He} and {pet} spent the day {place}.",
    "{name} and {pet} spent the morning {place}.",
]
SEE = ["{He} saw {sight} and {sight2}.", "There were {sight} and {sight2}.",
       "{name} looked at {sight}.", "They saw {sight}. It was so pretty!"]
WANT = [
    "{name} had a {color} {obj}. {He} liked to {use}.",
    "{name} had a {color} {obj} and wanted to {use}.",
    "{He} brought {his} {color} {obj}, because {he} wanted to {use}.",
    "More than anything, {name} loved {his} {color} {obj}.",
    "{name} found a {color} {obj} on the ground. {He} wanted to keep it.",
    "{name}'s {grown} had given {him} a {color} {obj}, and {he} wanted to {use}.",
]
WANT_SAY = [
    "\"Look at my {obj}!\" {name} said to {pet}.",
    "\"I love my {obj},\" {name} said with a smile.",
    "\"Let's {use}!\" {name} said.",
    "\"This is the best {obj} in the world,\" {he} told {pet}.",
]
FEEL_BAD = [
    "{name} felt {bad}.", "{name} was very {bad}.", "{He} began to cry.",
    "{His} eyes filled with tears.", "{name} sat down and felt {bad}.",
    "{pet} {sound} because {pet} was {bad} too.",
    "{name} did not know what to do.",
]
SAY_BAD = [
    "\"Oh no! My {obj}!\" {name} cried.", "\"What will I do now?\" {name} said.",
    "\"I want my {obj} back,\" {he} said sadly.", "\"Can anyone help me?\" {name} shouted.",
    "\"This is a bad day,\" {name} whispered.", "\"My poor {obj}!\" {name} said.",
]
HELPER_COMES = [
    "Just then, {helper} came by.", "Then {helper} saw {name}.",
    "After a while, {helper} walked over.", "Soon, {helper} heard {name} and came to look.",
    "Suddenly, {helper} appeared.",
]
HELPER_ASKS = [
    "\"Why are you sad?\" asked {helper_short}.", "\"What is wrong?\" {helper_short} asked.",
    "\"Can I help you?\" asked {helper_short}.", "\"Don't worry. I can help,\" said {helper_short}.",
]
ENDINGS = {
    # mood -> closing lines ({mood} is the word itself)
    "happy": ["{name} felt {mood} again.", "{name} was so {mood} that {he} danced around."],
    "proud": ["{name} felt {mood} because {he} did not give up.",
              "{name} was {mood} of {his} new friend and of {himself}."],
    "excited": ["{name} was so {mood} that {he} jumped up and down.",
                "{He} felt {mood} and wanted to play again tomorrow."],
    "calm": ["{name} took a deep breath and felt {mood}.", "Everything was quiet, and {name} felt {mood}."],
    "thankful": ["{name} felt {mood} for {his} friend.", "\"I am so {mood},\" {name} said."],
    "surprised": ["{name} was {mood} that a new friend could help so much.",
                  "{name} felt {mood} and laughed."],
    "sleepy": ["After all the fun, {name} felt {mood} and went home to bed.",
               "{name} was {mood}, so {he} curled up with {pet} and closed {his} eyes."],
    "sad": ["{name} felt a little {mood} about the {obj}.",
            "{name} was still a bit {mood}, but {he} was not alone."],
}
THANKS = ["\"Thank you!\" said {name}.", "{name} hugged {helper_short} and said thank you.",
          "\"You are a good friend,\" {name} told {helper_short}.",
          "{name} smiled at {helper_short}. \"Thank you so much!\""]
LESSONS = [
    "From that day on, {name} and {helper_short} were best friends.",
    "{name} learned that it is good to ask for help.",
    "{name} learned that friends help each other.",
    "After that, {name} always kept {his} {obj} close.",
    "{name} and {pet} went home with big smiles.",
    "It was the best day ever.",
    "That night, {name} told {his} {grown} all about it.",
]
LOST_LESSONS = [
    "But {helper_short} said, \"We can look again tomorrow.\"",
    "{name} learned that a friend is worth more than a toy.",
    "{helper_short} stayed with {name} until the sun went down.",
]
# grown-up -> possessive
GROWNUPS = {"mom": "her", "dad": "his", "grandma": "her", "grandpa": "his", "aunt": "her",
            "uncle": "his", "big sister": "her", "big brother": "his"}
TOLD = ["{name} told {helper_short} what happened.", "{name} pointed and explained everything.",
        "\"It is my {obj},\" {name} said. \"I need help.\"",
        "{name} wiped {his} eyes and told {helper_short} the whole story."]
PLAY = ["They played hide and seek behind the trees.", "They played tag until they were tired.",
        "{name} and {pet} ran in circles and laughed.", "They had a picnic with bread and jam.",
        "{pet} {move} around, and {name} clapped {his} hands.",
        "They sang a happy song together.", "{name} counted the clouds in the sky."]
SAD_FIX = ["{Helper} tried and tried, but it was no use.",
           "{Helper} did {helper_his} best, but they could not make it right."]
HOMES = ["in a small house", "in a little town", "near the woods", "by the sea", "on a farm",
         "in a big city", "in a blue house", "at the end of the street"]
BAD_FEELINGS = ["sad", "upset", "worried", "scared", "grumpy", "lonely"]

# Problems: what goes wrong, and fixes by kind of helper ("any" suits every helper).
PROBLEMS = [
    {"what": ["A big gust of wind blew the {obj} up into a tall tree.",
              "{name} threw the {obj} too high, and it got stuck in a tree."],
     "fix": {"flyer": ["{Helper} flew up to the branch and brought the {obj} down."],
             "climber": ["{Helper} climbed up the tree and got the {obj}."],
             "any": ["{Helper} found a long stick, and together they poked the {obj} down."]}},
    {"what": ["The {obj} fell into the water and floated away.",
              "{name} dropped the {obj}, and it splashed into the water."],
     "fix": {"swimmer": ["{Helper} jumped in, swam fast and brought the {obj} back."],
             "any": ["{Helper} held out a long branch, and the {obj} bumped into it."]}},
    {"what": ["The {obj} rolled under a big heavy rock.",
              "The {obj} slid under a heavy log and {name} could not reach it."],
     "fix": {"strong": ["{Helper} pushed the rock with all {helper_his} might, and there was the {obj}!"],
             "any": ["{Helper} and {name} pushed together. One, two, three! The {obj} was free."]}},
    {"what": ["A naughty {thief} grabbed the {obj} and ran away.",
              "Suddenly, a cheeky {thief} took the {obj} and hid it."],
     "fix": {"any": ["{Helper} asked the {thief} to give it back, and the {thief} said sorry.",
                     "{Helper} followed the {thief} and found the {obj} in a little hole."]}},
    {"what": ["The {obj} fell in the mud and got very dirty.",
              "{name} slipped, and the {obj} landed in a big puddle of mud."],
     "fix": {"any": ["{Helper} helped {name} wash the {obj} with clean water until it was good as new."]}},
    {"what": ["Oh no! The {obj} broke into two pieces.", "{name} stepped on the {obj}, and it broke."],
     "fix": {"person": ["{Helper} got some glue and fixed the {obj}."],
             "any": ["{Helper} showed {name} how to fix the {obj} with tape."]}},
    {"what": ["{name} looked everywhere, but the {obj} was lost.",
              "When {name} turned around, the {obj} was gone!"],
     "fix": {"sniffer": ["{Helper} sniffed the ground and found the {obj} under a bush."],
             "any": ["{Helper} helped {name} look, and they found the {obj} behind a tree."]}},
]
# helper -> (short name, possessive, kinds)
HELPERS = {
    "a wise old owl": ("the owl", "its", {"flyer", "any"}),
    "a big brown bear": ("the bear", "its", {"strong", "climber", "swimmer", "any"}),
    "a kind elephant": ("the elephant", "its", {"strong", "any"}),
    "a friendly dog": ("the dog", "its", {"sniffer", "swimmer", "any"}),
    "a little red bird": ("the bird", "its", {"flyer", "any"}),
    "a quick squirrel": ("the squirrel", "its", {"climber", "any"}),
    "a clever monkey": ("the monkey", "its", {"climber", "any"}),
    "a big duck": ("the duck", "its", {"swimmer", "flyer", "any"}),
    "a gentle horse": ("the horse", "its", {"strong", "any"}),
    "an old turtle": ("the turtle", "its", {"swimmer", "any"}),
    "a happy otter": ("the otter", "its", {"swimmer", "any"}),
    "a tall giraffe": ("the giraffe", "its", {"any"}),
}
THIEVES = ["crow", "monkey", "raccoon", "goat", "magpie", "squirrel", "puppy", "seagull"]

# ---------------------------------------------------------------------------- more variety
# More words make a corpus that a small model cannot memorise, and that supports a BPE
# vocabulary of several thousand pieces.

GIRLS += ["Abby", "Adele", "Aisha", "Alma", "Amelia", "Aria", "Astrid", "Beatrix", "Bianca",
          "Bree", "Camila", "Cara", "Celia", "Dalia", "Dina", "Edith", "Elena", "Eliza", "Elsa",
          "Esme", "Eva", "Fatima", "Fern", "Fiona", "Freya", "Gemma", "Gia", "Gwen", "Hazel",
          "Helen", "Ida", "Imani", "Inez", "Iris", "Jana", "Jenny", "Josie", "Julia", "June",
          "Kate", "Keiko", "Lana", "Layla", "Lena", "Lola", "Lottie", "Mabel", "Maggie", "Maria",
          "Marta", "Matilda", "Meera", "Millie", "Molly", "Nadia", "Naomi", "Nell", "Olive",
          "Olivia", "Paula", "Pearl", "Penny", "Priya", "Quinn", "Rachel", "Rita", "Rosie", "Sadie",
          "Selma", "Sienna", "Stella", "Suki", "Sunita", "Talia", "Tara", "Thea", "Una", "Vera",
          "Violet", "Willa", "Yara", "Yuki", "Zara", "Zelda", "Bonnie", "Dora", "Greta", "Hattie",
          "Kiki", "Mina", "Nala", "Pia", "Romy", "Sasha", "Tilly", "Uma", "Winnie", "Xena"]
BOYS += ["Aaron", "Adam", "Alfie", "Amir", "Andy", "Anton", "Archie", "Arjun", "Axel", "Barney",
         "Basil", "Bruno", "Caleb", "Carlos", "Cody", "Colin", "Dario", "David", "Dev", "Diego",
         "Dylan", "Eddie", "Emil", "Enzo", "Eric", "Ethan", "Evan", "Ferdinand", "Frank", "Gabe",
         "George", "Gus", "Harry", "Henry", "Ivan", "Jamal", "Jasper", "Jonah", "Juan", "Kenji",
         "Kofi", "Lars", "Lenny", "Liam", "Louis", "Malik", "Marco", "Mateo", "Miguel", "Nate",
         "Nico", "Olaf", "Otto", "Pablo", "Paco", "Peter", "Quentin", "Rafael", "Ray", "Remy",
         "Rory", "Rufus", "Ryan", "Samir", "Seth", "Simon", "Stan", "Tariq", "Teddy", "Tobias",
         "Ulric", "Victor", "Vik", "Walter", "Wes", "Yusuf", "Zach", "Zane", "Amos", "Bilal",
         "Bram", "Cyrus", "Dex", "Elio", "Fritz", "Gil", "Hank", "Iggy", "Jules", "Kit", "Lev",
         "Mo", "Nils", "Ollie", "Pete", "Rudy", "Sol", "Ted", "Ugo", "Vince"]
PET_NAMES += ["Acorn", "Bean", "Blossom", "Boots", "Bramble", "Bubba", "Button", "Clover",
              "Cookie", "Cricket", "Dot", "Dusty", "Fudge", "Ginger", "Goldie", "Honey", "Jelly",
              "Juniper", "Lucky", "Maple", "Marble", "Mittens", "Noodle", "Nutmeg", "Oreo",
              "Pebble", "Pickles", "Pudding", "Rusty", "Sprout", "Taffy", "Thistle", "Toffee",
              "Twinkle", "Waffles", "Whiskers", "Wiggles", "Zippy", "Snowball", "Scout"]
ANIMALS.update({
    "lizard": ("hissed", "crept"), "sheep": ("baaed", "wandered"), "donkey": ("brayed", "trotted"),
    "kangaroo": ("grunted", "bounced"), "koala": ("grunted", "climbed"), "panda": ("squeaked", "rolled"),
    "raccoon": ("chittered", "scurried"), "beaver": ("whistled", "swam"), "badger": ("grunted", "dug"),
    "mole": ("squeaked", "dug"), "crab": ("clicked", "scuttled"), "dolphin": ("clicked", "swam"),
    "whale": ("sang", "swam"), "bee": ("buzzed", "flew"), "butterfly": ("fluttered", "flew"),
    "ladybug": ("buzzed", "crawled"), "tiger cub": ("growled", "pounced"), "lion cub": ("roared", "pounced"),
    "monkey": ("chattered", "swung"), "giraffe": ("hummed", "walked"), "zebra": ("neighed", "galloped"),
    "camel": ("grunted", "walked"), "llama": ("hummed", "trotted"), "alpaca": ("hummed", "trotted"),
    "bat": ("squeaked", "flew"), "robin": ("sang", "flew"), "swan": ("honked", "glided"),
    "flamingo": ("honked", "strutted"), "peacock": ("called", "strutted"), "rooster": ("crowed", "strutted"),
    "guinea pig": ("squeaked", "scurried"), "ferret": ("chirped", "darted"), "gecko": ("chirped", "crept"),
    "moose": ("bellowed", "walked"), "wolf pup": ("howled", "ran"), "piglet": ("oinked", "trotted"),
    "calf": ("mooed", "wobbled"), "foal": ("neighed", "wobbled"), "duckling": ("peeped", "waddled"),
    "fish": ("blubbed", "swam"),
})
PLURALS = {"mouse": "mice", "goose": "geese", "sheep": "sheep", "deer": "deer", "fish": "fish",
           "moose": "moose", "calf": "calves", "wolf pup": "wolf pups"}
ANIMAL_ADJS += ["cuddly", "curious", "tiny", "speedy", "lazy", "chubby", "shy", "noisy",
                "wiggly", "sweet", "clever", "old", "young", "golden", "black", "orange"]
PLACES.update({
    "in the city park": ["a big fountain", "old benches", "a hot dog cart"],
    "at the market": ["piles of fruit", "loud sellers", "baskets of bread"],
    "in the desert": ["golden dunes", "a tall cactus", "a hidden spring"],
    "at the harbor": ["fishing boats", "thick ropes", "a red lighthouse"],
    "in the cave": ["shiny crystals", "dripping water", "sleeping bats"],
    "on the boat": ["white sails", "a round window", "a coil of rope"],
    "at the fair": ["a merry-go-round", "cotton candy", "a big wheel"],
    "in the attic": ["dusty trunks", "old pictures", "a round window"],
    "at the train station": ["a long train", "a ticket booth", "a big clock"],
    "in the bakery": ["warm bread", "sweet buns", "a flour sack"],
    "at the campsite": ["a tent", "a crackling fire", "marshmallows on sticks"],
    "in the greenhouse": ["tomato plants", "tiny seedlings", "a watering can"],
    "on the bridge": ["rushing water", "old railings", "boats going by"],
    "in the bamboo forest": ["green bamboo", "soft moss", "a sleepy panda"],
    "at the museum": ["dinosaur bones", "old paintings", "a shiny suit of armor"],
    "in the castle": ["tall towers", "a long hall", "a heavy door"],
    "at the aquarium": ["bright fish", "a giant tank", "a friendly octopus"],
    "in the toy shop": ["wooden trains", "teddy bears", "spinning tops"],
    "at the swimming pool": ["blue tiles", "a diving board", "splashing kids"],
    "in the sunflower field": ["tall sunflowers", "humming bees", "a scarecrow"],
    "by the waterfall": ["rushing water", "a rainbow in the spray", "wet ferns"],
    "on the mountain path": ["loose pebbles", "a wooden sign", "wild goats"],
    "in the treehouse": ["a rope ladder", "a tiny window", "a pile of comics"],
    "at the post office": ["stacks of letters", "a busy clerk", "bright stamps"],
    "in the living room": ["a soft sofa", "a warm fireplace", "a pile of pillows"],
    "on the rooftop": ["chimneys", "pigeons", "the whole sky"],
    "at the vegetable patch": ["fat pumpkins", "long carrots", "green beans"],
    "in the old barn": ["hay bales", "a sleepy cat", "a rusty tractor"],
    "at the ice rink": ["shiny ice", "skaters in scarves", "a hot cocoa stand"],
    "by the campfire": ["dancing flames", "glowing sparks", "friends singing"],
})
OBJECTS.update({
    "yo-yo": "do tricks", "jump rope": "skip in the yard", "skateboard": "roll down the path",
    "sled": "slide down the hill", "paper plane": "throw it far", "compass": "find north",
    "flashlight": "explore the dark", "backpack": "carry snacks", "lunchbox": "eat lunch at noon",
    "harmonica": "play a tune", "guitar": "strum a song", "flute": "play a soft song",
    "trumpet": "play a loud song", "tambourine": "shake it to music", "xylophone": "play notes",
    "storybook": "read it at bedtime", "notebook": "write a story", "pencil": "write letters",
    "sketchbook": "draw animals", "magnifying glass": "look at bugs", "telescope": "look at stars",
    "camera": "take pictures", "clock": "tell the time", "watch": "know the time",
    "necklace": "wear it to the party", "bracelet": "wear it every day", "ring": "wear it proudly",
    "crown": "play king and queen", "cape": "pretend to fly", "mask": "play dress-up",
    "sandcastle mold": "make towers of sand", "fishing rod": "catch a fish", "net": "catch butterflies",
    "watering can": "water the flowers", "flower pot": "grow a plant", "seed packet": "plant seeds",
    "birdhouse": "help the birds", "pillow": "have a pillow fight", "quilt": "stay cozy",
    "mitten": "keep warm hands", "boot": "splash in puddles", "sandal": "walk on the beach",
    "toy car": "race it fast", "toy truck": "carry little blocks", "toy plane": "zoom around",
    "building block": "build a tower", "spinning top": "watch it spin", "rubber duck": "play in the bath",
    "snow globe": "watch the snow fall", "music box": "hear a tune", "piggy bank": "save coins",
    "coin": "buy a treat", "ticket": "go to the show", "letter": "send it to a friend",
    "postcard": "send it home", "present": "give it on a birthday", "cake": "share it at the party",
    "lollipop": "lick it slowly", "carrot": "feed the pony", "banana": "eat it for a snack",
    "orange": "share it with friends", "muffin": "eat it for breakfast", "sandwich": "eat it at the picnic",
    "jar of honey": "make tea sweet", "candle": "light the room", "lantern": "light the path",
    "mirror": "make funny faces", "comb": "brush long hair", "toothbrush": "brush teeth",
    "button": "fix a coat", "glove": "catch the ball", "bat": "hit the ball",
    "hoop": "spin it around", "frisbee": "throw it to friends", "slinky": "watch it walk down stairs",
    "chalk": "draw on the sidewalk", "sticker book": "collect stickers", "globe": "find faraway lands",
})
HOBBIES = [
    "bake cookies", "paint pictures", "build towers", "collect stones", "count stars",
    "sing songs", "dance in the rain", "read stories", "climb trees", "plant flowers",
    "draw maps", "fold paper boats", "play the piano", "ride a bike", "jump in puddles",
    "watch the clouds", "listen to birds", "make mud pies", "look for bugs", "write poems",
    "play soccer", "swim in the lake", "fly kites", "tell jokes", "make necklaces",
    "help in the garden", "feed the ducks", "look at maps", "build sandcastles", "play chess",
    "knit scarves", "make music with pots", "skip stones", "hunt for shells", "pick berries",
    "roll down hills", "play pretend", "make funny hats", "visit the library", "cook soup",
    "chase butterflies", "learn new words", "solve puzzles", "race toy cars", "dig for treasure",
    "grow tomatoes", "make cards for friends", "play hopscotch", "practice cartwheels",
    "watch the trains", "feed the birds", "clean the house", "sort buttons", "tell stories",
    "play the drums", "invent games", "make paper crowns", "draw dragons", "look at the moon",
]
HOBBY = ["{name} liked to {hobby}.", "On weekends, {he} liked to {hobby}.",
         "{His} favorite thing was to {hobby}.", "{name} was {age_n} years old and loved to {hobby}.",
         "Every morning, {name} would {hobby} with {his} {grown}."]
FOODS = ["bread and butter", "apple pie", "warm soup", "rice and beans", "pancakes with syrup",
         "a cheese sandwich", "noodles", "fresh strawberries", "carrot sticks", "yogurt with honey",
         "a bowl of porridge", "banana bread", "tomato soup", "corn on the cob", "fish and chips",
         "dumplings", "a big salad", "grapes and crackers", "blueberry muffins", "hot cocoa",
         "peanut butter toast", "vegetable stew", "a plum", "cherry cake", "lemonade",
         "baked potatoes", "pea soup", "scrambled eggs", "cinnamon rolls", "watermelon slices"]
FOOD = ["For lunch, they ate {food}.", "{name}'s {grown} made {food} for everyone.",
        "They stopped to eat {food}.", "Later, they shared {food} under a tree."]
COUNT = ["{He} counted {n} {animals}.", "There were {n} {animals} nearby.",
         "{name} saw {n} {animals} and waved at them.", "{n} {animals} watched them from far away."]
LOOKS = ["{He} had {hair} hair and a big smile.", "{He} wore {his} {color} {clothes}.",
         "{name} had {hair} hair and wore a {color} {clothes}."]
HAIR = ["curly", "straight", "red", "brown", "black", "golden", "short", "long", "wavy", "messy"]
CLOTHES = ["jacket", "sweater", "dress", "hat", "raincoat", "shirt", "overalls", "scarf",
           "boots", "cap", "hoodie", "skirt", "vest", "coat"]
DAYS = ["It was Monday.", "It was a Tuesday in spring.", "It was Wednesday, the day after the rain.",
        "It was Thursday afternoon.", "It was a Friday in autumn.", "It was Saturday morning.",
        "It was a lazy Sunday.", "It was the first day of summer.", "It was the middle of winter.",
        "It was a day in early spring.", "It was {hour} o'clock in the morning.",
        "The clock said {hour} o'clock.", "It was {hour} days before {name}'s birthday."]
WEATHER += [
    "Big white clouds floated across the sky.", "A rainbow stretched over the hills.",
    "The wind howled, and the trees swayed.", "Thunder rumbled far away.",
    "The first snowflakes were falling.", "It was chilly, so everyone wore warm coats.",
    "Puddles shone on the ground after the storm.", "The sun was setting, and the sky turned pink.",
    "The stars were just coming out.", "Sunlight sparkled on the wet grass.",
    "A soft breeze carried the smell of flowers.", "Frost made the windows white.",
]
COLORS += ["sparkly", "fuzzy", "round", "wooden", "spotty", "magic", "tiny", "giant", "favorite",
           "shiny new", "bumpy", "smooth", "heavy", "light", "colorful", "dusty", "brand new"]
TRAITS += ["thoughtful", "funny", "bold", "patient", "lively", "dreamy", "polite", "honest",
           "caring", "clumsy", "chatty", "sleepy", "hungry", "smart", "creative"]
BAD_FEELINGS += ["confused", "cross", "nervous", "unhappy", "gloomy", "frustrated"]
HELPERS.update({
    "a busy beaver": ("the beaver", "its", {"swimmer", "strong", "any"}),
    "a kind old man": ("the old man", "his", {"person", "strong", "any"}),
    "a smiling lady": ("the lady", "her", {"person", "climber", "any"}),
    "a friendly farmer": ("the farmer", "her", {"person", "strong", "climber", "any"}),
    "a tall firefighter": ("the firefighter", "his", {"person", "climber", "strong", "any"}),
    "a brave little mouse": ("the mouse", "its", {"climber", "any"}),
    "a helpful crow": ("the crow", "its", {"flyer", "any"}),
    "a strong gorilla": ("the gorilla", "its", {"strong", "climber", "any"}),
    "a sniffing pig": ("the pig", "its", {"sniffer", "any"}),
    "a curious fox": ("the fox", "its", {"sniffer", "any"}),
    "a kind teacher": ("the teacher", "her", {"person", "any"}),
    "a quiet fisherman": ("the fisherman", "his", {"person", "swimmer", "any"}),
})
THIEVES += ["fox", "mischievous cat", "hungry goose", "little bear", "sneaky mouse", "jay"]

GIRLS += ["Agnes", "Alba", "Alice", "Annika", "Aurora", "Bella", "Bettina", "Carmen", "Cleo",
          "Daphne", "Delia", "Elodie", "Emilia", "Farah", "Flora", "Frida", "Georgia", "Gloria",
          "Harriet", "Heidi", "Ingrid", "Isabel", "Jasmine", "Joy", "Kamala", "Karin", "Laila",
          "Laura", "Lorna", "Lydia", "Magda", "Margot", "Maxine", "Minnie", "Miriam", "Nadine",
          "Noor", "Ophelia", "Paloma", "Petra", "Phoebe", "Rania", "Rebecca", "Renata", "Rhea",
          "Sabine", "Salma", "Sienna", "Simone", "Tamara", "Tanya", "Ursula", "Valentina",
          "Wanda", "Yasmin", "Zoya", "Beatrice", "Cecily", "Dorothy", "Eleanor", "Florence",
          "Gabriela", "Henrietta", "Juliet", "Kathleen", "Lucinda", "Marigold", "Natalia",
          "Octavia", "Penelope", "Rosalind", "Seraphina", "Theodora", "Veronica", "Wilhelmina"]
BOYS += ["Abel", "Alonso", "Ambrose", "Angus", "Arthur", "Benedict", "Bertie", "Boris", "Cedric",
         "Clement", "Cornelius", "Desmond", "Dominic", "Edgar", "Edmund", "Elliot", "Fabian",
         "Florian", "Gideon", "Gregory", "Hamish", "Horace", "Ignatius", "Isaac", "Jerome",
         "Joaquin", "Julian", "Kasper", "Laurence", "Leopold", "Lucas", "Magnus", "Marcel",
         "Maurice", "Montgomery", "Nathaniel", "Neville", "Orlando", "Oswald", "Patrick",
         "Percival", "Quincy", "Reginald", "Roland", "Rupert", "Sebastian", "Sylvester",
         "Thaddeus", "Timothy", "Tristan", "Vincent", "Wilbur", "Winston", "Xavier", "Zebedee",
         "Alistair", "Bartholomew", "Casimir", "Dmitri", "Emmanuel", "Fernando", "Gustav",
         "Humphrey", "Ishaan", "Jeremiah", "Kazimir", "Leonardo", "Mortimer", "Nikolai",
         "Obadiah", "Peregrine", "Raphael", "Solomon", "Theophilus", "Valentino"]
# Town names are built from two halves, e.g. "Pebbleford": many distinct proper nouns.
TOWN_HEADS = ["Pebble", "Maple", "Willow", "Bramble", "Honey", "Clover", "Thistle", "Acorn",
              "Fern", "Holly", "Juniper", "Meadow", "Moss", "Oak", "Pine", "Rose", "Sunny",
              "Silver", "Golden", "Apple", "Cherry", "Berry", "Otter", "Fox", "Badger", "Heron",
              "Robin", "Sparrow", "Wren", "Marsh", "Stone", "Copper", "Amber", "Misty", "Cloud",
              "Rain", "Snow", "Frost", "Briar", "Hazel"]
TOWN_TAILS = ["ford", "brook", "field", "wood", "dale", "ton", "bury", "well", "hill", "vale",
              "mere", "stead", "wick", "combe", "haven", "holm", "gate", "bridge", "cliff",
              "moor", "shire", "fold", "thorpe", "ridge", "hollow"]
TOWN = ["{name} lived in the {town_adj} town of {town}.",
        "{name}'s home was in {town}, a {town_adj} town.", "Everyone in {town} knew {name}.",
        "In the {town_adj} village of {town}, {name} was known for {his} smile."]
TOWN_ADJS = ["little", "sleepy", "busy", "quiet", "sunny", "windy", "snowy", "green", "old",
             "cozy", "hilly", "friendly", "tiny", "colorful", "peaceful"]
SAID = ["said", "whispered", "shouted", "called", "replied", "laughed", "giggled", "sighed",
        "cried", "answered", "added", "explained", "exclaimed", "mumbled", "declared"]
ADVERBS = ["softly", "happily", "quickly", "slowly", "quietly", "loudly", "gently", "kindly",
           "proudly", "bravely", "sadly", "cheerfully", "carefully", "nervously", "excitedly",
           "sleepily", "shyly", "calmly", "eagerly", "patiently"]
CHAT = ["\"What a lovely day,\" {name} {said} {adverb}.",
        "\"Come on, {pet}!\" {name} {said} {adverb}.",
        "\"I like it {place},\" {name} {said} {adverb}.",
        "\"Do you want to {hobby}?\" {name} asked {pet}.",
        "{pet} {sound} {adverb}, as if to say yes."]
HOBBIES += ["build a robot", "paint the fence", "sew a quilt", "carve pumpkins", "bake bread",
            "make lemonade", "ice skate", "play the violin", "blow bubbles", "draw comics",
            "whistle tunes", "fix old clocks", "collect feathers", "press flowers", "make masks",
            "write letters", "study the stars", "play checkers", "juggle oranges", "build forts"]
FOODS += ["spaghetti", "mashed potatoes", "a peach", "oatmeal cookies", "mango slices",
          "cucumber sandwiches", "pumpkin soup", "a bowl of cherries", "tacos", "sushi rolls",
          "flatbread with hummus", "chicken noodle soup", "a slice of pizza", "pear crumble"]
